package main

import (
	"os"
	"strings"
	"syscall"
)

// useMadvFree restarts a node (the run and demo commands), once, with
// madvdontneed=0 added to GODEBUG, so that the Go runtime returns freed heap pages to the kernel
// with MADV_FREE instead of MADV_DONTNEED. The setting is read only at
// start-up and cannot be set in the source (//go:debug does not take it),
// hence the exec; a GODEBUG that already names madvdontneed is left alone,
// and if the exec fails the process carries on as it is.
//
// Why: a node's heap is mostly Kafka fetch buffers of megabytes, freed at
// every garbage collection. After each cycle the runtime's scavenger handed
// some of those pages back, and the next fetch faulted them in again: a
// fifth of a draining node's page faults, each costing microseconds on a
// virtual machine. Pages freed with MADV_FREE stay mapped until the kernel
// needs the memory (it takes them back under pressure, a container's limit
// included), so reusing them costs nothing; until then they count in the
// process's RSS.
//
// The restart costs a second start-up of the runtime and the packages'
// initialisation, some tens of milliseconds of CPU, which is why the
// short-lived commands skip it.
func useMadvFree() {
	if len(os.Args) < 2 || os.Args[1] != "run" && os.Args[1] != "demo" {
		return
	}
	env, ok := os.LookupEnv("GODEBUG")
	if strings.Contains(env, "madvdontneed=") {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	if ok && env != "" {
		env += ","
	}
	if os.Setenv("GODEBUG", env+"madvdontneed=0") != nil {
		return
	}
	_ = syscall.Exec(exe, os.Args, os.Environ())
}
