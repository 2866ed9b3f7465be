package router

import (
	"maps"
	"testing"
	"time"
)

func TestWatermarks(t *testing.T) {
	w := NewWatermarks()
	sec := func(s int64) int64 { return s * int64(time.Second) }
	if !w.Now().Equal(time.Unix(0, 0)) {
		t.Fatal("a fresh watermark must not have moved")
	}
	w.assign([]int32{0, 1})
	w.read(0, 10, sec(100))
	w.read(1, 5, sec(90))
	w.ends(3, map[int32]int64{0: 100, 1: 100, 2: 100}, nil, sec(200))
	if got := w.Now().Unix(); got != 0 {
		t.Fatalf("partition 2 is read by nobody here, yet the watermark moved to %d", got)
	}
	w.assign([]int32{2})
	w.read(2, 0, sec(95))
	if got := w.Now().Unix(); got != 90 {
		t.Fatalf("watermark %d, want the slowest partition's 90", got)
	}
	// Partition 1 reaches its end: it is caught up as of the end check.
	w.read(1, 99, sec(150))
	w.ends(3, map[int32]int64{0: 100, 1: 100, 2: 100}, nil, sec(210))
	if got := w.Now().Unix(); got != 95 {
		t.Fatalf("watermark %d, want 95 (partition 2)", got)
	}
	w.read(0, 99, sec(160))
	w.read(2, 99, sec(170))
	w.ends(3, map[int32]int64{0: 100, 1: 100, 2: 100}, nil, sec(220))
	if got := w.Now().Unix(); got != 220 {
		t.Fatalf("all caught up: watermark %d, want the end check's time 220", got)
	}
	// A partition taken away holds the watermark; it never goes back.
	w.revoke([]int32{1})
	w.ends(3, map[int32]int64{0: 100, 1: 100, 2: 100}, nil, sec(230))
	if got := w.Now().Unix(); got != 220 {
		t.Fatalf("after revoke: watermark %d, want it held at 220", got)
	}
	// A partition assigned with nothing to read is caught up from its
	// committed offset.
	w.assign([]int32{1})
	w.ends(3, map[int32]int64{0: 100, 1: 100, 2: 100}, map[int32]int64{1: 100}, sec(240))
	if got := w.Now().Unix(); got != 240 {
		t.Fatalf("reassigned at its end: watermark %d, want 240", got)
	}
}

func TestWatermarksWithPeers(t *testing.T) {
	w := NewWatermarks()
	sec := func(s int64) int64 { return s * int64(time.Second) }
	w.assign([]int32{0})
	w.read(0, 99, sec(100))
	w.ends(3, map[int32]int64{0: 100, 1: 100, 2: 100}, nil, sec(200))
	w.Report("b", map[int32]int64{1: sec(150)}, 1)
	if got := w.Now().Unix(); got != 0 {
		t.Fatalf("partition 2 is read by nobody, yet the watermark is %d", got)
	}
	w.Report("c", map[int32]int64{2: sec(120)}, 1)
	if got := w.Now().Unix(); got != 120 {
		t.Fatalf("watermark %d, want 120 (c's partition 2)", got)
	}
	// c dies: partition 2 holds the watermark until someone reads it.
	w.Forget("c")
	w.Report("b", map[int32]int64{1: sec(300)}, 2)
	if got := w.Now().Unix(); got != 120 {
		t.Fatalf("after c left: watermark %d, want it held at 120", got)
	}
	// b takes partition 2 over, from an older position: the newest report
	// counts, and the watermark does not go back.
	w.Report("b", map[int32]int64{1: sec(300), 2: sec(110)}, 3)
	if got := w.Now().Unix(); got != 120 {
		t.Fatalf("watermark %d, want 120 (never back)", got)
	}
	w.Report("b", map[int32]int64{1: sec(300), 2: sec(250)}, 4)
	if got := w.Now().Unix(); got != 200 {
		t.Fatalf("watermark %d, want 200 (partition 0, caught up at 200)", got)
	}
	w.Report("b", map[int32]int64{1: sec(0)}, 3) // older than b's last: ignored
	if got := w.Now().Unix(); got != 200 {
		t.Fatalf("a reordered report moved the watermark to %d", got)
	}
}

func TestWatermarksLag(t *testing.T) {
	w := NewWatermarks()
	w.assign([]int32{0, 1, 2})
	if got := w.Lag(); len(got) != 0 {
		t.Fatalf("lag before any end offset is known: %v, want none", got)
	}
	w.read(0, 9, 1)  // read up to offset 9: position 10
	w.read(1, 99, 1) // position 100
	// Partition 2 is not read yet: its position is the committed offset.
	w.ends(3, map[int32]int64{0: 50, 1: 100, 2: 30}, map[int32]int64{2: 12}, 2)
	want := map[int32]int64{0: 40, 1: 0, 2: 18}
	if got := w.Lag(); !maps.Equal(got, want) {
		t.Fatalf("lag %v, want %v", got, want)
	}
	w.read(0, 59, 3) // read past the end offset last seen: no negative lag
	w.revoke([]int32{1})
	want = map[int32]int64{0: 0, 2: 18}
	if got := w.Lag(); !maps.Equal(got, want) {
		t.Fatalf("after reading on and a revoke: lag %v, want %v", got, want)
	}
}
