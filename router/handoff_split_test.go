package router_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tailsift/tailsift/cluster"
	"github.com/tailsift/tailsift/router"
	"github.com/tailsift/tailsift/sampler"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// allRemote is a ring on which one peer owns every trace.
type allRemote struct{ peer string }

func (r allRemote) Owner(*sampler.TraceID) (string, bool) { return r.peer, false }
func (r allRemote) Has(n string) bool                     { return n == r.peer }

// collect is the receiving node's sampler: it keeps the spans it was given
// (by their bytes, unique per span) and settles each at once, as a durable
// archive would.
type collect struct {
	mu    sync.Mutex
	spans map[string]int
}

func (c *collect) Add(_ context.Context, items []sampler.Item) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range items {
		c.spans[string(items[i].Span.Raw)]++
		items[i].Span.Src.Done()
	}
	return nil
}

func (c *collect) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.spans)
}

// node is a Route and a Receiver behind one cluster transport, as a
// cluster member wires them.
type node struct {
	*router.Route
	*router.Receiver
}

// handoffItems returns n spans of about 400 bytes each, over n/16 traces,
// scanned as the consumer scans them, all settling src.
func handoffItems(t *testing.T, n int, src *sampler.Pending) []sampler.Item {
	t.Helper()
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "checkout")
	spans := rs.ScopeSpans().AppendEmpty().Spans()
	for i := range n {
		s := spans.AppendEmpty()
		s.SetTraceID(pcommon.TraceID{1, byte(i / 16 >> 8), byte(i / 16), 1})
		s.SetSpanID(pcommon.SpanID{2, byte(i >> 8), byte(i), 2})
		s.SetName("op")
		s.SetStartTimestamp(pcommon.Timestamp(time.Now().UnixNano()))
		s.SetEndTimestamp(pcommon.Timestamp(time.Now().UnixNano()))
		s.Attributes().PutStr("payload", strings.Repeat("x", 360))
	}
	raw, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		t.Fatal(err)
	}
	sc, _ := router.NewScanner(router.EncodingProto)
	items, err := sc.Scan(raw, src)
	if err != nil || len(items) != n {
		t.Fatalf("scan: %d items, %v", len(items), err)
	}
	src.Add(n)
	return slices.Clone(items)
}

// TestHandoffLargerThanTheTransportLimit hands 2,000 spans (about 800 KB)
// to a peer over real cluster transports whose batch limit is 64 KiB:
// Route splits them, and every span arrives and is acknowledged. In the
// second case the receiving peer's limit (16 KiB) is below the sender's:
// the peer refuses the first batches, and their spans go again in smaller
// ones until all are taken.
func TestHandoffLargerThanTheTransportLimit(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		senderMax, receiverMax int
	}{
		{"limit shared", 64 << 10, 64 << 10},
		{"peer refuses", 64 << 10, 16 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var addrs sync.Map
			resolve := func(n string) (string, bool) {
				a, ok := addrs.Load(n)
				if !ok {
					return "", false
				}
				return a.(string), true
			}
			got := &collect{spans: map[string]int{}}
			b := &node{Receiver: router.NewReceiver(got, nil)}
			a := &node{Receiver: router.NewReceiver(got, nil)}
			start := func(id string, max int, h *node) *cluster.Transport {
				tr, err := cluster.NewTransport(cluster.TransportConfig{NodeID: id, ListenAddr: "127.0.0.1:0",
					Resolve: resolve, MaxBatchBytes: max}, h)
				if err != nil {
					t.Fatal(err)
				}
				addrs.Store(id, tr.Addr())
				h.Route = router.NewRoute(got, tr, nil, nil)
				var wg sync.WaitGroup
				wg.Go(func() { tr.Serve(ctx) })
				wg.Go(func() { h.Receiver.Run(ctx, 20*time.Millisecond, tr.Ack) })
				t.Cleanup(func() { cancel(); tr.Close(); wg.Wait() })
				return tr
			}
			start("b", tc.receiverMax, b)
			start("a", tc.senderMax, a)
			a.SetRing(allRemote{"b"})

			const n = 2000
			src := &sampler.Pending{}
			items := handoffItems(t, n, src)
			if size := len(router.AppendBatch(nil, items)); size <= tc.senderMax {
				t.Fatalf("hand-off of %d bytes fits the limit %d; the test needs more", size, tc.senderMax)
			}
			if err := a.Add(ctx, items); err != nil {
				t.Fatal(err)
			}
			// The poll loop's re-routing, until every span is
			// acknowledged.
			for !src.Settled() {
				if ctx.Err() != nil {
					t.Fatalf("hand-off incomplete: %d of %d spans received, %d batches in flight", got.count(), n, a.InFlight())
				}
				if err := a.Resend(ctx); err != nil {
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if got.count() != n {
				t.Fatalf("received %d distinct spans, want %d", got.count(), n)
			}
		})
	}
}
