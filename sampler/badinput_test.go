package sampler

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMillionSpanTrace sends one trace of 1,000,000 spans, mixed with
// ordinary traces, through a running sampler. The trace is decided when it
// reaches max_spans_per_trace. Kept, the rest follow the decision in chunks
// of at most that size; dropped, the rest are buffered and decided again a
// piece at a time, in case a later span keeps it. Either way the buffer
// stays bounded, every span is settled and the ordinary traces are decided
// as usual. Every trace ID differs from every other in both halves.
func TestMillionSpanTrace(t *testing.T) {
	for _, tc := range []struct {
		name string
		pol  Policy
	}{{"kept", keepAll}, {"dropped", dropAll}} {
		t.Run(tc.name, func(t *testing.T) {
			const total, perBatch, limit = 1_000_000, 1000, 10_000
			cfg := Config{Shards: 2, MaxSpansPerTrace: limit}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			out := make(chan *Kept, 16)
			m := NewMetrics(nil)
			s := New(cfg, tc.pol, out, m, nil)
			ctx, cancel := context.WithCancel(context.Background())
			var runWG sync.WaitGroup
			runWG.Go(func() { s.Run(ctx) })

			var mu sync.Mutex
			keptSpans := map[TraceID]int{}
			biggest := 0
			var drainWG sync.WaitGroup
			drainWG.Go(func() {
				for k := range out {
					mu.Lock()
					keptSpans[k.ID] += len(k.Spans)
					if k.ID == hot && len(k.Spans) > biggest {
						biggest = len(k.Spans)
					}
					mu.Unlock()
					for i := range k.Spans {
						k.Spans[i].Src.Done() // durable, as the archive would say
					}
				}
			})

			raw := make([]byte, 100)
			scope := &Scope{Service: "svc"}
			var pendings []*Pending
			var maxBuffered int64
			batch := make([]Item, 0, perBatch+2)
			for b := 0; b < total/perBatch; b++ {
				p := &Pending{}
				pendings = append(pendings, p)
				batch = batch[:0]
				for i := 0; i < perBatch; i++ {
					batch = append(batch, Item{TraceID: hot, Span: Span{Raw: raw, Scope: scope, Src: p, Start: 1, End: 2}})
				}
				other := TraceID{0: 2, 1: byte(b >> 8), 2: byte(b), 8: 2, 9: byte(b >> 8), 10: byte(b)}
				batch = append(batch,
					Item{TraceID: other, Span: Span{Raw: raw, Scope: scope, Src: p, Start: 1, End: 5, Flags: FlagRoot}},
					Item{TraceID: other, Span: Span{Raw: raw, Scope: scope, Src: p, Start: 2, End: 3}})
				p.Add(len(batch))
				if err := s.Add(ctx, batch); err != nil {
					t.Fatal(err)
				}
				maxBuffered = max(maxBuffered, s.BufferedBytes())
			}
			if err := s.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			// Late spans still waiting for a tick go out with the next one.
			waitFor(t, func() bool {
				for _, p := range pendings {
					if !p.Settled() {
						return false
					}
				}
				return true
			})
			cancel()
			runWG.Wait()
			drainWG.Wait()

			pieces, late := 1.0, float64(total-limit)
			if tc.pol == dropAll {
				pieces, late = total/limit, 0
			}
			if got := testutil.ToFloat64(m.completed.WithLabelValues(causeSpans)); got != pieces {
				t.Errorf("traces decided at the span limit: %v, want %v (the hot trace)", got, pieces)
			}
			// Buffered: the hot trace up to the limit, plus ordinary traces
			// still waiting for their quiet period.
			if bound := int64(limit+2*total/perBatch) * int64(len(raw)); maxBuffered > bound {
				t.Errorf("buffered up to %d bytes, over %d", maxBuffered, bound)
			}
			if got := testutil.ToFloat64(m.lateSpans.WithLabelValues("keep")) + testutil.ToFloat64(m.lateSpans.WithLabelValues("drop")); got != late {
				t.Errorf("late spans %v, want %v", got, late)
			}
			if tc.pol == dropAll {
				if len(keptSpans) != 0 {
					t.Errorf("drop policy, but %d traces kept", len(keptSpans))
				}
				return
			}
			if keptSpans[hot] != total || biggest > limit {
				t.Errorf("hot trace: %d spans kept (want %d), largest chunk %d (limit %d)", keptSpans[hot], total, biggest, limit)
			}
			if n := len(keptSpans) - 1; n != total/perBatch {
				t.Errorf("%d ordinary traces kept, want %d", n, total/perBatch)
			}
		})
	}
}

var hot = TraceID{0: 0xee, 8: 0xee, 15: 1}

// waitFor polls cond for up to 30 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
