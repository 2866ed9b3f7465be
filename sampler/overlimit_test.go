package sampler

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// overLimitItem is a span of a test trace starting at start (ns) and lasting
// dur.
func overLimitItem(id TraceID, root, isErr bool, start, dur int64, src *Pending) Item {
	it := item(id, root, isErr, src)
	it.Span.Start, it.Span.End = start, start+dur
	return it
}

// TestOverLimitTraceKeptByLaterSpan sends traces over the span limit whose
// first pieces hold nothing the policy keeps: the error is on the root,
// which arrives last, or the trace is slow only over all its pieces. Each
// is dropped at the limit, then kept on the piece that shows it: that piece
// and the later spans are archived with the keeping reason and rate 1, the
// spans of the pieces dropped before are counted lost, and every span is
// settled.
func TestOverLimitTraceKeptByLaterSpan(t *testing.T) {
	lat, err := NewLatencyPolicy(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		reason string
		span   func(i int) (root, isErr bool, start, dur int64)
	}{
		{"error on the last span", reasonError, func(i int) (bool, bool, int64, int64) {
			return i == 34, i == 34, int64(i) * 1e6, 1e6
		}},
		{"slow over its pieces", lat.reason, func(i int) (bool, bool, int64, int64) {
			return false, false, int64(i) * 30e6, 1e6 // the extent passes 1s with span 34
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const limit, total = 10, 35
			ctx := context.Background()
			t0 := time.Unix(1_700_000_000, 0)
			sh, out := testShard(t, Config{Shards: 1, MaxSpansPerTrace: limit, QuietPeriod: time.Second},
				Chain{ErrorPolicy{}, lat})
			id := tid(7)
			src := &Pending{}
			for i := range total {
				root, isErr, start, dur := tc.span(i)
				it := overLimitItem(id, root, isErr, start, dur, src)
				sh.add(ctx, &it, t0)
			}
			sh.expire(ctx, t0.Add(time.Minute)) // the last piece is quiet or past its wait
			ks := drain(out)
			if len(ks) != 1 {
				t.Fatalf("%d kept, want the trace's last piece", len(ks))
			}
			k := ks[0]
			if len(k.Spans) != total-3*limit || k.Reason != tc.reason || k.SampleRate != 1 || !k.Partial || k.Lost != 3*limit || k.Late {
				t.Fatalf("kept %d spans, reason %q, rate %v, partial %v, lost %d, late %v; want %d spans, %q, 1, true, %d, false",
					len(k.Spans), k.Reason, k.SampleRate, k.Partial, k.Lost, k.Late, total-3*limit, tc.reason, 3*limit)
			}
			// Spans arriving after the flip follow the kept decision.
			for range 3 {
				it := overLimitItem(id, false, false, 0, 1, src)
				sh.add(ctx, &it, t0.Add(time.Minute))
			}
			sh.expire(ctx, t0.Add(time.Minute))
			ks = drain(out)
			if len(ks) != 1 || !ks[0].Late || len(ks[0].Spans) != 3 || ks[0].Reason != tc.reason || ks[0].SampleRate != 1 {
				t.Fatalf("late spans after the flip: %+v", ks)
			}
			k.Release()
			ks[0].Release()
			if !src.Settled() {
				t.Error("spans left unsettled")
			}
			m := sh.s.m
			if got := testutil.ToFloat64(m.overlimitLost); got != 3*limit {
				t.Errorf("lost spans counted: %v, want %d", got, 3*limit)
			}
			if got := testutil.ToFloat64(m.overlimitFlipped); got != 1 {
				t.Errorf("traces kept on a later piece: %v, want 1", got)
			}
			if got := testutil.ToFloat64(m.lateSpans.WithLabelValues("drop")); got != 0 {
				t.Errorf("%v spans dropped as late", got)
			}
		})
	}
}

// TestOverLimitTraceStaysDropped checks that a trace over the limit that
// nothing keeps is dropped piece by piece, holding at most the limit's
// spans at a time, with nothing counted lost.
func TestOverLimitTraceStaysDropped(t *testing.T) {
	const limit = 10
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	sh, out := testShard(t, Config{Shards: 1, MaxSpansPerTrace: limit}, Chain{ErrorPolicy{}})
	src := &Pending{}
	for i := range 1000 {
		it := overLimitItem(tid(9), i == 999, false, int64(i), 1, src)
		sh.add(ctx, &it, t0)
		if sh.bytes > limit*100 {
			t.Fatalf("span %d: %d bytes buffered, over the limit's %d", i, sh.bytes, limit*100)
		}
	}
	sh.flush(ctx, t0)
	sh.publish()
	if ks := drain(out); len(ks) != 0 {
		t.Fatalf("%d kept, want none", len(ks))
	}
	if !src.Settled() {
		t.Error("spans left unsettled")
	}
	m := sh.s.m
	if got := testutil.ToFloat64(m.overlimitLost) + testutil.ToFloat64(m.overlimitFlipped); got != 0 {
		t.Errorf("lost or flipped counted for a trace nothing keeps: %v", got)
	}
	if got := testutil.ToFloat64(m.spansDropped); got != 1000 {
		t.Errorf("spans dropped: %v, want 1000", got)
	}
}
