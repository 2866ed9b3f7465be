package sampler

import (
	"context"
	"testing"
	"time"
)

// errorsOnly keeps a trace when one of its spans is an error, as the
// default policy does for the traces that matter most.
type errorsOnly struct{}

func (errorsOnly) Name() string { return "errors" }
func (errorsOnly) Decide(t *Trace) Verdict {
	if t.HasError() {
		return Verdict{Decision: Keep, SampleRate: 1, Reason: "error"}
	}
	return Verdict{Decision: Drop, Reason: "ok"}
}

func notMine(*TraceID) bool { return false }

// A shard never decides a trace this node no longer owns, whatever made it
// due: its spans go aside, unsettled, for the owner.
func TestShardSetsAsideTracesItNoLongerOwns(t *testing.T) {
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	cfg := Config{Shards: 1, QuietPeriod: time.Second, MaxWait: 5 * time.Second, MaxSpansPerTrace: 4, MaxBufferedBytes: 1 << 20}
	tests := []struct {
		name  string
		spans int // 100-byte spans of one trace with a root, added at t0 before the ring change
		after func(sh *shard)
		want  int // spans set aside
	}{
		{"quiet", 2, func(sh *shard) { sh.expire(ctx, t0.Add(time.Second)) }, 2},
		{"max wait", 2, func(sh *shard) { sh.expire(ctx, t0.Add(5*time.Second)) }, 2},
		{"span limit", 3, func(sh *shard) {
			it := item(tid(1), false, false, nil)
			sh.add(ctx, &it, t0)
		}, 4},
		{"memory", 2, func(sh *shard) {
			for i := range 11_000 { // past 1 MiB of other traces, which this node owns
				it := item(TraceID{0: 2, 1: byte(i >> 8), 2: byte(i)}, false, false, nil)
				sh.add(ctx, &it, t0)
			}
		}, 2},
		{"shutdown", 2, func(sh *shard) { sh.flush(ctx, t0) }, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sh, out := testShard(t, cfg, keepAll)
			var src Pending
			id := tid(1)
			for i := range tc.spans {
				it := item(id, i == 0, false, &src)
				sh.add(ctx, &it, t0)
			}
			sh.s.SetOwner(func(x *TraceID) bool { return *x != id })
			tc.after(sh)
			for _, k := range drain(out) {
				if k.ID == id {
					t.Fatalf("decided trace %x, which another node owns", id)
				}
			}
			if src.Settled() {
				t.Fatal("spans of a trace owned elsewhere were settled here")
			}
			if sh.traces.get(&id) != nil {
				t.Fatal("trace owned elsewhere is still buffered")
			}
			got := sh.s.TakeAside()
			if len(got) != tc.want {
				t.Fatalf("set aside %d spans, want %d", len(got), tc.want)
			}
			for _, it := range got {
				if it.TraceID != id {
					t.Fatalf("set aside a span of %x, which this node owns", it.TraceID)
				}
			}
			if n := len(sh.s.TakeAside()); n != 0 {
				t.Fatalf("second TakeAside returned %d spans, want 0", n)
			}
		})
	}
}

// Spans of a trace owned elsewhere are not buffered (they arrive from a
// peer whose ring is behind, or from the local consumer just before the
// ring swap); a trace decided here before the change still takes its late
// spans by that decision.
func TestShardRoutesSpansItDoesNotOwn(t *testing.T) {
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	sh, out := testShard(t, Config{Shards: 1, QuietPeriod: time.Second, MaxWait: 5 * time.Second}, keepAll)
	decided := item(tid(1), true, false, nil)
	sh.add(ctx, &decided, t0)
	sh.expire(ctx, t0.Add(time.Second))
	if ks := drain(out); len(ks) != 1 {
		t.Fatalf("kept %d traces before the ring change, want 1", len(ks))
	}

	sh.s.SetOwner(notMine)
	var src Pending
	a, b := item(tid(2), true, true, &src), item(tid(1), false, false, nil)
	sh.add(ctx, &a, t0.Add(2*time.Second))
	sh.add(ctx, &b, t0.Add(2*time.Second))
	if sh.traces.len() != 0 {
		t.Fatalf("buffered %d traces owned elsewhere, want 0", sh.traces.len())
	}
	if at := sh.s.OldestAside(); at != 0 {
		t.Fatalf("OldestAside = %d for spans without a record time, want 0", at)
	}
	got := sh.s.TakeAside()
	if len(got) != 1 || got[0].TraceID != tid(2) || src.Settled() {
		t.Fatalf("set aside %d spans (settled=%v), want the one of trace 2, unsettled", len(got), src.Settled())
	}
	sh.expire(ctx, t0.Add(3*time.Second))
	ks := drain(out)
	if len(ks) != 1 || !ks[0].Late || ks[0].ID != tid(1) {
		t.Fatalf("late span of the trace decided here: %+v, want it kept by that decision", ks)
	}
}

// OldestAside holds the earliest record time of the spans set aside until
// they are taken, so the watermark does not pass them in transit.
func TestSamplerOldestAside(t *testing.T) {
	sh, _ := testShard(t, Config{Shards: 1}, keepAll)
	sh.s.SetOwner(notMine)
	t0 := time.Unix(1_700_000_000, 0)
	for i, ts := range []int64{300, 100, 200} {
		src := &Pending{TS: ts}
		it := item(tid(byte(i)), false, false, src)
		sh.add(context.Background(), &it, t0)
	}
	if got := sh.s.OldestAside(); got != 100 {
		t.Fatalf("OldestAside = %d, want 100", got)
	}
	sh.s.TakeAside()
	if got := sh.s.OldestAside(); got != 0 {
		t.Fatalf("OldestAside after TakeAside = %d, want 0", got)
	}
}

// The split this prevents: after a ring change the new owner receives the
// trace's later pieces while the old owner still buffers its first ones.
// If the old owner decided its piece (it holds the error) and the new one
// decided its own (no error), the trace would be archived in part. With
// the ownership test, the old owner's piece goes to the new owner, which
// decides the whole trace once.
func TestRingChangeDecidesTraceOnceWhole(t *testing.T) {
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	cfg := Config{Shards: 1, QuietPeriod: time.Second, MaxWait: 5 * time.Second}
	oldOwner, oldOut := testShard(t, cfg, errorsOnly{})
	newOwner, newOut := testShard(t, cfg, errorsOnly{})
	id := tid(7)

	root, failed := item(id, true, false, nil), item(id, false, true, nil)
	oldOwner.add(ctx, &root, t0)
	oldOwner.add(ctx, &failed, t0)

	// The ring moves the trace; the old owner's hand-off is late (its
	// shards were busy), and its quiet period passes first.
	oldOwner.s.SetOwner(notMine)
	later := item(id, false, false, nil)
	newOwner.add(ctx, &later, t0.Add(500*time.Millisecond))
	oldOwner.expire(ctx, t0.Add(2*time.Second))
	if ks := drain(oldOut); len(ks) != 0 {
		t.Fatalf("the old owner decided %d traces after the ring moved them", len(ks))
	}
	oldOwner.handoff()
	for _, it := range oldOwner.s.TakeAside() {
		newOwner.add(ctx, &it, t0.Add(2*time.Second))
	}
	newOwner.expire(ctx, t0.Add(3*time.Second))
	ks := drain(newOut)
	if len(ks) != 1 || len(ks[0].Spans) != 3 || ks[0].Reason != "error" {
		t.Fatalf("new owner kept %+v, want the whole trace (3 spans) kept for its error", ks)
	}
}
