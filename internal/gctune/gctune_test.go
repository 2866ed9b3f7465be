package gctune

import (
	"math"
	"runtime"
	"runtime/debug"
	"testing"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, floor uint64
		base, want  int
	}{
		{10 * mib, 100 * mib, 100, 900}, // next cycle at 10+90 = 100 MiB
		{40 * mib, 100 * mib, 100, 150}, // 40+60
		{50 * mib, 100 * mib, 100, 100}, // half the floor: as configured
		{80 * mib, 100 * mib, 100, 100}, // above: as configured
		{30 * mib, 100 * mib, 300, 300}, // never below the configured GOGC
		{1 * mib, 100 * mib, 100, 2500}, // the runtime's minimum goal (4 MiB × 25) is the floor
		{0, 100 * mib, 100, 2500},       // nothing measured yet
		{1 * mib, 4 * mib, 100, 100},    // a floor at the runtime's own minimum changes nothing
		{1, math.MaxUint64 / 2, 100, math.MaxInt32},
	} {
		if got := percent(c.live, c.floor, c.base); got != c.want {
			t.Errorf("percent(%d, %d, %d) = %d, want %d", c.live, c.floor, c.base, got, c.want)
		}
	}
}

var sink []byte

// churn allocates n MiB of garbage a MiB at a time, as fetch buffers are,
// and returns how many collections ran meanwhile.
func churn(n int) uint32 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		sink = make([]byte, 1<<20)
	}
	runtime.ReadMemStats(&after)
	return after.NumGC - before.NumGC
}

// TestMinHeapRunsFewerCycles checks the outcome: with a small live heap,
// 512 MiB of garbage costs about 512/64 collections under a 64 MiB floor,
// against one every few MiB without it; and GOGC is restored on stop.
func TestMinHeapRunsFewerCycles(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	runtime.GC()
	without := churn(512)

	stop := MinHeap(64 << 20)
	runtime.GC() // let the tuner see a measured live heap
	runtime.GC()
	with := churn(512)
	stop()
	t.Logf("collections for 512 MiB of garbage: %d without a floor, %d with 64 MiB", without, with)
	if with > 16 || with*4 > without {
		t.Fatalf("with a 64 MiB floor: %d collections (without: %d); want at most 16 and a quarter", with, without)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("GOGC after stop = %d, want 100 restored", got)
	}
}

// TestMinHeapFollowsTheLiveHeap: after each collection GOGC is set from
// what that collection found live.
func TestMinHeapFollowsTheLiveHeap(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	live := make([]byte, 16<<20)
	for i := range live {
		live[i] = byte(i)
	}
	stop := MinHeap(64 << 20)
	defer stop()
	waitCycles(t, 3)
	// 16 MiB and a little more live: the next cycle at 64 MiB is 300% less a little.
	if got := gogc(); got < 200 || got > 300 {
		t.Fatalf("GOGC with 16 MiB live under a 64 MiB floor = %d, want 200-300", got)
	}
	runtime.KeepAlive(live) // from here on the 16 MiB are garbage
	waitCycles(t, 3)
	if got := gogc(); got < 1000 {
		t.Fatalf("GOGC once the 16 MiB are garbage = %d, want over 1000", got)
	}
}

func gogc() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// TestMinHeapOneAtATime: a second tuner would take the first one's raised
// GOGC for the configured value and restore it on stop.
func TestMinHeapOneAtATime(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	stop := MinHeap(64 << 20)
	waitCycles(t, 2)
	second := MinHeap(64 << 20) // reads the raised GOGC
	stop()
	second()
	if got := gogc(); got != 100 {
		t.Fatalf("GOGC after both stopped = %d, want 100", got)
	}
	again := MinHeap(64 << 20) // the first stopped: this one runs
	waitCycles(t, 2)
	raised := gogc()
	again()
	if raised <= 100 {
		t.Fatalf("GOGC under a tuner started after the first stopped = %d, want it raised", raised)
	}
}

func TestMinHeapOffWithGCOff(t *testing.T) {
	old := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(old)
	stop := MinHeap(64 << 20)
	runtime.GC()
	runtime.GC()
	if got := debug.SetGCPercent(-1); got != -1 {
		t.Fatalf("GOGC=off became %d", got)
	}
	stop()
}

// waitCycles gives the cleanup goroutine, which runs after a collection,
// time to act on the last n.
func waitCycles(t *testing.T, n int) {
	t.Helper()
	for range n {
		runtime.GC()
		runtime.Gosched()
	}
}
