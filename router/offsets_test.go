package router

import (
	"testing"
)

func TestTrackerCommitsOnlySettledPrefix(t *testing.T) {
	tr := newTracker("t")
	var recs []*tracked
	for off := int64(10); off < 15; off++ {
		r := tr.track(0, off, 0)
		r.Add(2)
		recs = append(recs, r)
	}
	commitAt := func() int64 {
		tr.advance()
		c := tr.commitable()
		if c == nil {
			return -1
		}
		tr.committed(c)
		return c["t"][0].Offset
	}
	if got := commitAt(); got != 10 {
		t.Fatalf("nothing settled: commit %d, want 10 (the first offset seen)", got)
	}
	// Settle records 11 and 12 fully, record 10 half: nothing moves.
	for _, r := range recs[1:3] {
		r.Done()
		r.Done()
	}
	recs[0].Done()
	if got := commitAt(); got != -1 {
		t.Fatalf("head unsettled: commit %d, want none", got)
	}
	recs[0].Done()
	if got := commitAt(); got != 13 {
		t.Fatalf("10..12 settled: commit %d, want 13", got)
	}
	_, n := tr.unsettled(0)
	if n != 2 {
		t.Fatalf("unsettled = %d, want 2", n)
	}
	tr.forget([]int32{0})
	if c := tr.commitable(); c != nil {
		t.Fatalf("forgotten partition still commits: %v", c)
	}
}

func TestTrackerEmptyRecordSettlesAtOnce(t *testing.T) {
	tr := newTracker("t")
	tr.track(3, 100, 0) // a record with no valid spans
	tr.advance()
	c := tr.commitable()
	if c["t"][3].Offset != 101 {
		t.Fatalf("commit %v, want offset 101", c)
	}
}
