// Package gctune keeps the garbage collector from running more often than a
// heap of a given size calls for.
//
// Go's collector starts a cycle when the heap has grown by GOGC percent
// (100 by default) over what the last cycle found live. A node's live heap
// is small — buffered spans live in memory mapped outside the heap — while
// Kafka fetch buffers of megabytes are allocated and dropped at the rate
// spans arrive. With 10–60 MiB live, a node draining a backlog ran a
// collection for every 10–60 MiB fetched: forty cycles a backlog of two
// million spans, each costing milliseconds of marking, write barriers and
// sweeping, a seventh of the node's CPU time.
//
// MinHeap sets a floor under the collector's heap goal: GOGC is raised
// after each cycle so that the next one starts when the heap reaches the
// floor, and returns to its configured value once the live heap is half
// the floor or more. So below the floor the heap holds at most the floor
// (garbage included), and above it the collector behaves as configured:
// the peak heap, once the live heap has grown, is what it would have been.
// This is the memory limit's mirror image (GOMEMLIMIT makes the collector
// run more often near a ceiling, which still applies).
package gctune

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// heapMinimum is the runtime's smallest heap goal at GOGC=100; it scales
// with GOGC, so a raised GOGC must not lift it past the floor.
const heapMinimum = 4 << 20

// percent returns the GOGC that makes a heap with live bytes live reach
// floor before the next cycle, never below base nor such that the
// runtime's minimum goal exceeds floor.
func percent(live, floor uint64, base int) int {
	if 2*live >= floor || floor <= heapMinimum {
		return base
	}
	live = max(live, 1) // before the first cycle: nothing measured yet
	p := (floor - live) * 100 / live
	p = min(p, floor*100/heapMinimum, math.MaxInt32)
	return max(int(p), base)
}

// tuner owns the GOGC setting while it runs.
type tuner struct {
	floor  uint64
	base   int
	sample []metrics.Sample

	mu      sync.Mutex
	stopped bool
}

// sentinel is garbage from birth: its cleanup runs once per collection.
// It holds a pointer so that it is not combined with other small objects,
// which would delay its collection.
type sentinel struct {
	p *int
	_ [8]byte
}

// active is the running tuner, if any: GOGC is the process's, so one
// tuner owns it at a time.
var active struct {
	sync.Mutex
	t *tuner
}

// MinHeap keeps the heap goal at floor bytes or more, as the package
// comment describes, until stop is called, which restores GOGC. It does
// nothing (stop is a no-op) if floor is 0, the collector is off
// (GOGC=off), or another MinHeap is running.
func MinHeap(floor uint64) (stop func()) {
	active.Lock()
	defer active.Unlock()
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	if floor == 0 || base < 0 || active.t != nil {
		return func() {}
	}
	t := &tuner{floor: floor, base: base, sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	active.t = t
	t.tune()
	t.arm()
	return t.stop
}

func (t *tuner) arm() {
	runtime.AddCleanup(&sentinel{}, func(t *tuner) { t.onCycle() }, t)
}

// onCycle runs on the cleanup goroutine after a collection.
func (t *tuner) onCycle() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	t.tuneLocked()
	t.arm()
}

func (t *tuner) tune() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tuneLocked()
}

func (t *tuner) tuneLocked() {
	metrics.Read(t.sample)
	var live uint64
	if t.sample[0].Value.Kind() == metrics.KindUint64 {
		live = t.sample[0].Value.Uint64()
	}
	debug.SetGCPercent(percent(live, t.floor, t.base))
}

func (t *tuner) stop() {
	active.Lock()
	defer active.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopped {
		t.stopped = true
		debug.SetGCPercent(t.base)
		active.t = nil
	}
}
