package router

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestTrackerCommitsOnlySettledPrefix(t *testing.T) {
	tr := newTracker("t")
	recs := trackRange(tr, 10, 15, 2)
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

// TestUnsettledGaugesForgetRevokedPartitions checks that a partition this
// node no longer reads leaves /metrics, instead of showing its last count
// of unsettled records for ever.
func TestUnsettledGaugesForgetRevokedPartitions(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := &Consumer{track: newTracker("t"), wm: NewWatermarks(), m: NewMetrics(reg)}
	c.track.track(3, 10, 0).Add(1)
	c.track.track(7, 20, 0).Add(1)
	c.updateGauges()
	if got := testutil.ToFloat64(c.m.unsettledRecords.WithLabelValues("3")); got != 1 {
		t.Fatalf("partition 3: %v unsettled, want 1", got)
	}
	c.track.forget([]int32{3})
	c.updateGauges()
	if n := testutil.CollectAndCount(c.m.unsettledRecords); n != 1 {
		t.Fatalf("%d unsettled-record series after partition 3 was revoked, want 1 (partition 7)", n)
	}
	if n := testutil.CollectAndCount(c.m.unsettledAge); n != 1 {
		t.Fatalf("%d unsettled-age series after partition 3 was revoked, want 1", n)
	}
}

// TestTrackerHeldPartitionComesBack: a revoked partition commits nothing;
// back at an offset within what was read here, the records read before
// are skipped and committing goes on from the group's offset; back past
// it, the tracker starts over.
func TestTrackerHeldPartitionComesBack(t *testing.T) {
	tr := newTracker("t")
	recs := trackRange(tr, 10, 15, 1)
	recs[0].Done()
	tr.advance()
	tr.hold([]int32{0})
	if c := tr.commitable(); c != nil {
		t.Fatalf("held partition commits: %v", c)
	}
	if _, n := tr.unsettled(0); n != 0 {
		t.Fatalf("held partition shows %d unsettled records", n)
	}

	// Back at the group's offset 10: 10..14 were read here already.
	for off := int64(10); off < 15; off++ {
		if r := tr.track(0, off, 0); r != nil {
			t.Fatalf("offset %d handed over again", off)
		}
	}
	if r := tr.track(0, 15, 0); r == nil {
		t.Fatal("offset 15, never read, skipped")
	}
	if c := tr.commitable(); c == nil || c["t"][0].Offset != 11 {
		t.Fatalf("after coming back: commit %v, want 11", c)
	}
	if _, n := tr.unsettled(0); n != 5 {
		t.Fatalf("unsettled = %d, want 5 (11..15)", n)
	}

	// Held again, and back at 20: another member read past this node.
	tr.hold([]int32{0})
	r := tr.track(0, 20, 0)
	if r == nil {
		t.Fatal("offset 20 skipped")
	}
	r.Add(1)
	if c := tr.commitable(); c == nil || c["t"][0].Offset != 20 {
		t.Fatalf("after starting over: commit %v, want 20", c)
	}
	if _, n := tr.unsettled(0); n != 1 {
		t.Fatalf("unsettled = %d, want 1", n)
	}
}

// trackRange tracks the records from offset from to to (exclusive) of
// partition 0, each with spans spans in flight.
func trackRange(tr *tracker, from, to int64, spans int) []*tracked {
	var recs []*tracked
	for off := from; off < to; off++ {
		r := tr.track(0, off, 0)
		r.Add(spans)
		recs = append(recs, r)
	}
	return recs
}
