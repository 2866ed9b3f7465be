package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// userHZ is the unit of utime and stime in /proc/<pid>/stat. Linux fixes it
// at 100 for user space whatever the kernel's internal tick, and reading
// sysconf(_SC_CLK_TCK) would need cgo.
const userHZ = 100

// child is one process the benchmark started. Its cost is read from the
// kernel's accounting of that process alone (/proc/<pid>/stat while it runs,
// the rusage wait4 returns when it exits), never from its own metrics, so
// tailsift and the Collector are measured by the same code; other processes
// on the machine do not count.
type child struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when the process has been reaped
	err  error         // Wait's result, valid after done
}

// children tracks every started process so that an interrupted run still
// stops them (Pdeathsig covers a run that is killed outright).
var children struct {
	sync.Mutex
	list []*child
}

// startChild starts argv with stdout and stderr in logPath. The child gets
// SIGKILL if this process dies, so a benchmark killed with -9 leaves no
// broker or consumer behind on the machine.
func startChild(name, logPath string, argv ...string) (*child, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, log: f, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		f.Close()
		close(c.done)
	}()
	children.Lock()
	children.list = append(children.list, c)
	children.Unlock()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// exited reports whether the process has ended, and why.
func (c *child) exited() (bool, error) {
	select {
	case <-c.done:
		if c.err == nil {
			return true, errors.New("exited with status 0")
		}
		return true, c.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM, waits up to grace, then SIGKILLs. Safe to call twice.
func (c *child) stop(grace time.Duration) {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// usage is the rusage of an exited process: its whole life's CPU and its
// peak resident set.
type usage struct {
	cpu    time.Duration
	sys    time.Duration // of cpu, in the kernel: mostly page faults and reads on this kind of machine
	faults int64         // page faults, minor and major
	maxRSS int64         // bytes
}

// rusage returns the exited process's resource usage, as wait4 reported it.
func (c *child) rusage() (usage, bool) {
	select {
	case <-c.done:
	default:
		return usage{}, false
	}
	ps := c.cmd.ProcessState
	if ps == nil {
		return usage{}, false
	}
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok {
		return usage{}, false
	}
	// ru_maxrss is in KiB on Linux.
	return usage{cpu: ps.UserTime() + ps.SystemTime(), sys: ps.SystemTime(), faults: ru.Minflt + ru.Majflt, maxRSS: ru.Maxrss << 10}, true
}

// stopAll stops every child still running.
func stopAll() {
	children.Lock()
	list := append([]*child(nil), children.list...)
	children.Unlock()
	for _, c := range list {
		c.stop(10 * time.Second)
	}
}

// cpu returns the user plus system CPU time the process has consumed so
// far: the counters getrusage(RUSAGE_SELF) would return inside it.
func (c *child) cpu() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.pid()))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime (fields 14 and 15) from a
// /proc/<pid>/stat line. The command name (field 2) may hold spaces and
// parentheses, so fields are counted from the last ')'.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("proc stat: no ')'")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("proc stat: %d fields after the name", len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("proc stat: %w", err)
	}
	return time.Duration(ut+st) * time.Second / userHZ, nil
}

// memory returns the resident set size now (VmRSS) and its peak so far
// (VmHWM), in bytes.
func (c *child) memory() (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.pid()))
	if err != nil {
		return 0, 0, err
	}
	return parseStatusMemory(b)
}

// parseStatusMemory reads VmRSS and VmHWM (in kB) from /proc/<pid>/status.
func parseStatusMemory(b []byte) (rss, hwm int64, err error) {
	rss, hwm = -1, -1
	for line := range strings.Lines(string(b)) {
		key, val, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("proc status: %s: unexpected %q", key, val)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("proc status: %s: %w", key, err)
		}
		if key == "VmRSS" {
			rss = n << 10
		} else {
			hwm = n << 10
		}
	}
	if rss < 0 || hwm < 0 {
		return 0, 0, errors.New("proc status: no VmRSS or VmHWM")
	}
	return rss, hwm, nil
}

// loadAvg returns the 1-minute load average of the machine, to say in the
// report whether other work shared the CPUs.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
