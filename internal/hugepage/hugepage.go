// Package hugepage backs the low addresses of the Go heap with transparent
// huge pages, where the kernel grants them only on request.
//
// A node's heap grows to a few hundred megabytes within seconds of start:
// Kafka fetch buffers, the trace index, the archive's column buffers. With
// 4 KiB pages every fresh page is a fault, and on a virtual machine a
// fault costs microseconds (on some hypervisors over ten), so growing a
// 160 MiB heap cost a draining node a tenth of its CPU time. One 2 MiB page
// is one fault.
//
// Linux hands out huge pages to anonymous memory either always, never, or
// (the common distribution default) only for ranges marked with
// madvise(MADV_HUGEPAGE). The Go runtime does not mark its heap, and it
// maps each new stretch of heap as it grows, so marking it afterwards is
// too late for the faults that count. BackHeap therefore grows the heap
// once, at start, by a single large allocation that it never touches,
// marks that stretch, and frees it: the heap's next allocations, which the
// runtime places at the lowest free addresses, land there.
//
// The cost is bounded by the size asked for: pages of the stretch are
// backed two megabytes at a time, so a sparsely used part of it holds more
// memory than 4 KiB pages would, and the kernel's khugepaged may over time
// fill in a partly backed huge page.
package hugepage

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// Size is the unit the kernel backs a marked range in.
const Size = 2 << 20

// Why BackHeap does nothing under the kernel's other policies.
var (
	errAlways = errors.New("the kernel backs all anonymous memory with huge pages already (transparent_hugepage: always)")
	errNever  = errors.New("transparent huge pages are off (transparent_hugepage: never)")
)

// mode reads the kernel's transparent huge page policy: the bracketed word
// of /sys/kernel/mm/transparent_hugepage/enabled.
func mode(text string) (string, error) {
	i := strings.IndexByte(text, '[')
	j := strings.IndexByte(text, ']')
	if i < 0 || j < i {
		return "", fmt.Errorf("unrecognised transparent_hugepage setting %q", strings.TrimSpace(text))
	}
	return text[i+1 : j], nil
}

// checkMode says whether marking ranges makes a difference under the
// policy in text.
func checkMode(text string) error {
	m, err := mode(text)
	if err != nil {
		return err
	}
	switch m {
	case "madvise":
		return nil
	case "always":
		return errAlways
	case "never":
		return errNever
	}
	return fmt.Errorf("unrecognised transparent_hugepage setting %q", m)
}

// limit caps size so that one allocation of it cannot fail where the
// kernel checks allocations against memory (overcommit_memory 2, or 0
// with little memory): a quarter of the machine's memory, in whole huge
// pages.
func limit(size int64, memTotal int64, overcommit string) (int64, error) {
	if strings.TrimSpace(overcommit) == "2" {
		return 0, errors.New("the kernel counts every mapping against memory (vm.overcommit_memory 2)")
	}
	if memTotal > 0 {
		size = min(size, memTotal/4)
	}
	size &^= Size - 1
	if size < 2*Size {
		return 0, fmt.Errorf("too small to hold a huge page: %d bytes", size)
	}
	return size, nil
}

// memTotal reads MemTotal from /proc/meminfo, in bytes; 0 if unknown.
func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err == nil {
				return kb << 10
			}
		}
	}
	return 0
}
