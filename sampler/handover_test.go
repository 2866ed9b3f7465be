package sampler

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"
)

// runSampler starts a sampler with its shard goroutines and returns it with
// its output.
func runSampler(t *testing.T, cfg Config, p Policy) (*Sampler, chan *Kept) {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	out := make(chan *Kept, 1024)
	s := New(cfg, p, out, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, out
}

// After a ring change, the decision for a kept trace leaves the old
// owner's cache and, adopted by the new owner, makes a late span there
// come out as the rest of the trace did: late, with the same rate, reason,
// decision time and summary.
func TestKeptDecisionFollowsTheTrace(t *testing.T) {
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	cfg := Config{Shards: 1, QuietPeriod: time.Second, MaxWait: 5 * time.Second}
	old, oldOut := testShard(t, cfg, fixedPolicy{Verdict{Decision: Keep, SampleRate: 8, Reason: "rate"}})
	id, other := tid(1), tid(2)
	for _, x := range []TraceID{id, other} {
		root, child := item(x, true, true, nil), item(x, false, false, nil)
		old.add(ctx, &root, t0)
		old.add(ctx, &child, t0)
	}
	old.wall = t0.Add(1234 * time.Millisecond)
	old.expire(ctx, t0.Add(time.Second))
	first := drain(oldOut)
	if len(first) != 2 {
		t.Fatalf("kept %d traces before the ring change, want 2", len(first))
	}
	orig := first[0]
	if orig.ID != id {
		orig = first[1]
	}

	old.s.SetOwner(func(x *TraceID) bool { return *x != id })
	old.handoff()
	ds := old.s.TakeAsideDecisions()
	if len(ds) != 1 || ds[0].ID != id {
		t.Fatalf("set aside decisions %+v, want the one of trace %x only", ds, id)
	}
	if n := len(old.s.TakeAsideDecisions()); n != 0 {
		t.Fatalf("second TakeAsideDecisions returned %d, want 0", n)
	}
	// The old owner no longer holds it: a late span there goes aside for
	// the owner instead of being archived here.
	late := item(id, false, false, nil)
	old.add(ctx, &late, t0.Add(2*time.Second))
	old.expire(ctx, t0.Add(2*time.Second))
	if ks := drain(oldOut); len(ks) != 0 {
		t.Fatalf("old owner archived %d traces after handing the decision over", len(ks))
	}
	if n := len(old.s.TakeAside()); n != 1 {
		t.Fatalf("old owner set aside %d late spans, want 1", n)
	}
	// The other trace is still this node's: its decision stays.
	if d, _ := old.cache.lookup(other); d == nil {
		t.Fatal("decision for a trace still owned here left the cache")
	}

	// The decision travels encoded, as between nodes.
	got, err := DecodeDecisions(AppendDecisions(nil, ds))
	if err != nil {
		t.Fatal(err)
	}
	nw, newOut := runSampler(t, Config{Shards: 4, QuietPeriod: time.Second, MaxWait: 5 * time.Second}, dropAll)
	if err := nw.AdoptDecisions(ctx, got); err != nil {
		t.Fatal(err)
	}
	var src Pending
	if err := nw.Add(ctx, []Item{item(id, false, false, &src)}); err != nil {
		t.Fatal(err)
	}
	if err := nw.Expire(ctx); err != nil {
		t.Fatal(err)
	}
	var k *Kept
	select {
	case k = <-newOut:
	case <-time.After(10 * time.Second):
		t.Fatal("the new owner archived nothing for the late span")
	}
	if !k.Late || len(k.Spans) != 1 || k.ID != id {
		t.Fatalf("new owner sent %+v, want one late span of %x", k, id)
	}
	if k.SampleRate != orig.SampleRate || k.Reason != orig.Reason || !k.DecidedAt.Equal(orig.DecidedAt) ||
		k.RootService != orig.RootService || k.Start != orig.Start || k.DurationNs != orig.DurationNs ||
		k.SpanCount != orig.SpanCount || k.HasError != orig.HasError {
		t.Fatalf("late span archived with %+v, want the original decision %+v", k, orig)
	}
	k.Release()
	if !src.Settled() {
		t.Fatal("late span not settled by Release")
	}
}

// Spans of a trace that reach the new owner before the decision does are
// buffered as a new trace; the adopted decision sends them out late, under
// it, instead of leaving them to be decided alone.
func TestAdoptedDecisionTakesBufferedSpans(t *testing.T) {
	ctx := context.Background()
	nw, out := runSampler(t, Config{Shards: 2, QuietPeriod: time.Hour, MaxWait: 2 * time.Hour}, dropAll)
	id := tid(3)
	if err := nw.Add(ctx, []Item{item(id, false, false, nil), item(id, false, false, nil)}); err != nil {
		t.Fatal(err)
	}
	d := KeptDecision{ID: id, SampleRate: 4, Reason: "errors", DecidedAt: time.Unix(1_700_000_000, 5), SpanCount: 9}
	if err := nw.AdoptDecisions(ctx, []KeptDecision{d}); err != nil {
		t.Fatal(err)
	}
	select {
	case k := <-out:
		if !k.Late || len(k.Spans) != 2 || k.SampleRate != 4 || k.Reason != "errors" || k.SpanCount != 9 || !k.DecidedAt.Equal(d.DecidedAt) {
			t.Fatalf("adoption sent %+v, want the 2 buffered spans late under the adopted decision", k)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("adoption left the buffered spans of its trace undecided")
	}
	if n := nw.BufferedBytes(); n != 0 {
		t.Fatalf("%d bytes still buffered after adoption", n)
	}
}

// A decision for a trace this node does not own (the ring moved on again)
// is not adopted but set aside to travel on.
func TestAdoptDecisionNotOwnedPassesOn(t *testing.T) {
	s, _ := runSampler(t, Config{Shards: 2}, dropAll)
	s.SetOwner(notMine)
	d := KeptDecision{ID: tid(4), SampleRate: 1, Reason: "r"}
	if err := s.AdoptDecisions(context.Background(), []KeptDecision{d}); err != nil {
		t.Fatal(err)
	}
	if got := s.TakeAsideDecisions(); len(got) != 1 || got[0] != d {
		t.Fatalf("set aside %+v, want %+v", got, d)
	}
}

// A running shard moves its kept decisions out at the first tick after an
// ownership change, without a Handoff.
func TestShardMovesDecisionsAtTick(t *testing.T) {
	ctx := context.Background()
	s, out := runSampler(t, Config{Shards: 2, TickInterval: 10 * time.Millisecond}, keepAll)
	ids := []TraceID{tid(5), tid(6), tid(7)}
	for _, id := range ids {
		if err := s.Add(ctx, []Item{item(id, true, false, nil)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for range ids {
		(<-out).Release()
	}
	s.SetOwner(func(x *TraceID) bool { return *x == tid(6) })
	var got []KeptDecision
	for deadline := time.Now().Add(10 * time.Second); len(got) < 2 && time.Now().Before(deadline); {
		got = append(got, s.TakeAsideDecisions()...)
		time.Sleep(10 * time.Millisecond)
	}
	if len(got) != 2 || got[0].ID == tid(6) || got[1].ID == tid(6) || got[0].ID == got[1].ID {
		t.Fatalf("moved decisions %+v, want those of traces 5 and 7", got)
	}
}

func TestDecisionsEncoding(t *testing.T) {
	ds := []KeptDecision{
		{ID: tid(1), SampleRate: 2.5, Reason: "error", DecidedAt: time.Unix(1_700_000_000, 123), RootService: "checkout",
			RootName: "GET /cart", Start: 1_699_999_999_000_000_000, DurationNs: 42_000, SpanCount: 17, HasError: true},
		{ID: TraceID{0: 0xff, 15: 0xee}, SampleRate: 1},
	}
	b := AppendDecisions(nil, ds)
	got, err := DecodeDecisions(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(ds) {
		t.Fatalf("decoded %d decisions, want %d", len(got), len(ds))
	}
	for i := range ds {
		g, w := got[i], ds[i]
		if !g.DecidedAt.Equal(w.DecidedAt) {
			t.Fatalf("decision %d: decided at %v, want %v", i, g.DecidedAt, w.DecidedAt)
		}
		g.DecidedAt, w.DecidedAt = time.Time{}, time.Time{}
		if g != w {
			t.Fatalf("decision %d: %+v, want %+v", i, g, w)
		}
	}
	if got, err := DecodeDecisions(AppendDecisions(nil, nil)); err != nil || len(got) != 0 {
		t.Fatalf("empty list: %v, %v", got, err)
	}
	bad := map[string][]byte{
		"empty":         nil,
		"wrong magic":   append([]byte{'X'}, b[1:]...),
		"next version":  append([]byte{'K', 2}, b[2:]...),
		"trailing byte": append(bytes.Clone(b), 0),
		"huge count":    {'K', 1, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"bad flags":     append(bytes.Clone(b[:len(b)-1]), 2),
		"nan rate":      AppendDecisions(nil, []KeptDecision{{SampleRate: nanRate()}}),
	}
	for i := 1; i < len(b); i++ {
		bad[fmt.Sprintf("truncated to %d bytes", i)] = b[:i]
	}
	for name, in := range bad {
		if got, err := DecodeDecisions(in); err == nil {
			t.Errorf("%s: decoded %+v, want an error", name, got)
		}
	}
}

func nanRate() float64 {
	var z float64
	return z / z
}

// FuzzDecodeDecisions: decoding never panics, and what decodes encodes
// back to the same bytes.
func FuzzDecodeDecisions(f *testing.F) {
	f.Add(AppendDecisions(nil, []KeptDecision{{ID: tid(1), SampleRate: 3, Reason: "x", DecidedAt: time.Unix(5, 6), SpanCount: 2}}))
	f.Add([]byte{'K', 1, 0})
	f.Add([]byte{'K', 1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		ds, err := DecodeDecisions(b)
		if err != nil {
			return
		}
		// Varints written longer than needed decode too; anything else
		// must encode back to the same bytes.
		if again := AppendDecisions(nil, ds); len(again) == len(b) && !bytes.Equal(again, b) {
			t.Fatalf("re-encoding changed the bytes:\n%x\n%x", b, again)
		}
	})
}
