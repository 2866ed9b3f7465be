package router

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tailsift/tailsift/sampler"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// testMessage encodes traces×spans spans over two resources.
func testMessage(t testing.TB, traces, spans int) []byte {
	t.Helper()
	td := ptrace.NewTraces()
	for r := 0; r < 2; r++ {
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", fmt.Sprintf("svc-%d", r))
		rs.SetSchemaUrl("https://opentelemetry.io/schemas/1.26.0")
		ss := rs.ScopeSpans().AppendEmpty()
		ss.Scope().SetName("lib")
		for tr := r; tr < traces; tr += 2 {
			for s := 0; s < spans; s++ {
				sp := ss.Spans().AppendEmpty()
				var tid [16]byte
				binary.BigEndian.PutUint64(tid[8:], uint64(tr+1)*0x9e3779b97f4a7c15)
				tid[0] = 1
				sp.SetTraceID(tid)
				var sid [8]byte
				binary.BigEndian.PutUint64(sid[:], uint64(tr*1000+s+1))
				sp.SetSpanID(sid)
				if s > 0 {
					binary.BigEndian.PutUint64(sid[:], uint64(tr*1000+1))
					sp.SetParentSpanID(sid)
				}
				sp.SetName(fmt.Sprintf("op-%d", s))
				sp.SetStartTimestamp(pcommon.Timestamp(1e18 + s))
				sp.SetEndTimestamp(pcommon.Timestamp(1e18 + s + 1000))
				sp.Attributes().PutStr("k", "v")
			}
		}
	}
	b, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func scanAll(t testing.TB, msg []byte, src *sampler.Pending) []sampler.Item {
	t.Helper()
	sc, err := NewScanner(EncodingProto)
	if err != nil {
		t.Fatal(err)
	}
	items, err := sc.Scan(msg, src)
	if err != nil {
		t.Fatal(err)
	}
	if src != nil {
		src.Add(len(items))
	}
	return append([]sampler.Item(nil), items...)
}

func TestAppendBatchRoundTrip(t *testing.T) {
	msg := testMessage(t, 10, 5)
	items := scanAll(t, msg, nil)
	batch := AppendBatch(nil, items)
	want, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(msg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(batch)
	if err != nil {
		t.Fatalf("batch is not valid OTLP: %v", err)
	}
	wj, _ := (&ptrace.JSONMarshaler{}).MarshalTraces(want)
	gj, _ := (&ptrace.JSONMarshaler{}).MarshalTraces(got)
	if string(wj) != string(gj) {
		t.Fatalf("batch differs from the original message\nwant %s\ngot  %s", wj, gj)
	}

	// The record time travels with the batch; OTLP readers skip it.
	src := &sampler.Pending{TS: 1_700_000_000_123_456_789}
	items = scanAll(t, msg, src)
	batch = AppendBatch(nil, items)
	if got := batchTS(batch); got != src.TS {
		t.Fatalf("batch record time %d, want %d", got, src.TS)
	}
	if _, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(batch); err != nil {
		t.Fatalf("batch with record time is not valid OTLP: %v", err)
	}
	rec := &recorder{}
	if err := NewReceiver(rec, nil).Handle(context.Background(), "b", batch, 1); err != nil {
		t.Fatal(err)
	}
	if len(rec.items) != len(items) || rec.items[0].Span.Src.TS != src.TS {
		t.Fatalf("received %d items with record time %d", len(rec.items), rec.items[0].Span.Src.TS)
	}
}

// fakeRing owns traces by the low bit of the last byte: even here, odd on "b".
type fakeRing struct{ members map[string]bool }

func (r fakeRing) Owner(id *sampler.TraceID) (string, bool) {
	if id[15]&1 == 0 || !r.members["b"] {
		return "a", true
	}
	return "b", false
}
func (r fakeRing) Has(n string) bool { return r.members[n] }

type recorder struct {
	mu    sync.Mutex
	items []sampler.Item
}

func (r *recorder) Add(_ context.Context, items []sampler.Item) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.items = append(r.items, items...)
	return nil
}

// loopTransport delivers to a Receiver in process, or fails.
type loopTransport struct {
	rc   *Receiver
	fail bool
	sent int
}

func (l *loopTransport) Send(ctx context.Context, to string, batch []byte, seq uint64) error {
	if l.fail {
		return fmt.Errorf("peer %s unreachable", to)
	}
	l.sent++
	return l.rc.Handle(ctx, "a", append([]byte(nil), batch...), seq)
}

func TestRouteForwardsAndSettlesOnAck(t *testing.T) {
	ctx := context.Background()
	localA, localB := &recorder{}, &recorder{}
	rcB := NewReceiver(localB, nil)
	tr := &loopTransport{rc: rcB}
	route := NewRoute(localA, tr, nil, nil)
	route.SetRing(fakeRing{members: map[string]bool{"a": true, "b": true}})

	var src sampler.Pending
	items := scanAll(t, testMessage(t, 20, 3), &src)
	if err := route.Add(ctx, items); err != nil {
		t.Fatal(err)
	}
	if len(localA.items)+len(localB.items) != len(items) || len(localB.items) == 0 || len(localA.items) == 0 {
		t.Fatalf("local %d + forwarded %d != %d", len(localA.items), len(localB.items), len(items))
	}
	for _, it := range localB.items {
		if it.TraceID[15]&1 != 1 {
			t.Fatalf("trace %x went to b", it.TraceID)
		}
	}
	// Settle everything on both sides: only b's ack settles a's source.
	for _, it := range localA.items {
		it.Span.Src.Done()
	}
	for _, it := range localB.items {
		it.Span.Src.Done()
	}
	if src.Settled() {
		t.Fatal("source settled before b acknowledged")
	}
	var acked []uint64
	rcB.mu.Lock()
	for _, r := range rcB.pending {
		if r.p.Settled() {
			acked = append(acked, r.seq)
		}
	}
	rcB.mu.Unlock()
	route.Acked("b", acked)
	if !src.Settled() || route.InFlight() != 0 {
		t.Fatalf("after ack: settled=%v inflight=%d", src.Settled(), route.InFlight())
	}
}

func TestRouteReroutesWhenPeerLeavesOrFails(t *testing.T) {
	ctx := context.Background()
	localA, localB := &recorder{}, &recorder{}
	tr := &loopTransport{rc: NewReceiver(localB, nil)}
	route := NewRoute(localA, tr, nil, nil)
	route.SetRing(fakeRing{members: map[string]bool{"a": true, "b": true}})
	var src sampler.Pending
	items := scanAll(t, testMessage(t, 20, 3), &src)
	if err := route.Add(ctx, items); err != nil {
		t.Fatal(err)
	}
	forwarded := len(localB.items)
	// b dies before acknowledging: its batches come back to a.
	route.SetRing(fakeRing{members: map[string]bool{"a": true}})
	if err := route.Resend(ctx); err != nil {
		t.Fatal(err)
	}
	if len(localA.items) != len(items) {
		t.Fatalf("after b left, a holds %d of %d spans (%d had gone to b)", len(localA.items), len(items), forwarded)
	}
	// A failed send also comes back.
	tr.fail = true
	route.SetRing(fakeRing{members: map[string]bool{"a": true, "b": true}})
	var src2 sampler.Pending
	items2 := scanAll(t, testMessage(t, 4, 2), &src2)
	before := len(localA.items)
	if err := route.Add(ctx, items2); err != nil {
		t.Fatal(err)
	}
	route.SetRing(fakeRing{members: map[string]bool{"a": true}})
	if err := route.Resend(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(localA.items) - before; got != len(items2) {
		t.Fatalf("failed send: %d of %d spans routed again locally", got, len(items2))
	}
}

// TestRouteResendsUnacknowledged covers a peer that took a batch and then
// never acknowledged it while staying in the ring (it died and came back
// under the same name before the others noticed): after the ack timeout
// its spans are routed again, to whoever owns them now.
func TestRouteResendsUnacknowledged(t *testing.T) {
	ctx := context.Background()
	localA, localB := &recorder{}, &recorder{}
	tr := &loopTransport{rc: NewReceiver(localB, nil)}
	m := NewRouteMetrics(nil)
	route := NewRoute(localA, tr, m, nil)
	route.SetRing(fakeRing{members: map[string]bool{"a": true, "b": true}})
	var src sampler.Pending
	items := scanAll(t, testMessage(t, 20, 3), &src)
	if err := route.Add(ctx, items); err != nil {
		t.Fatal(err)
	}
	forwarded := len(localB.items)
	// Within the timeout nothing moves.
	if err := route.Resend(ctx); err != nil {
		t.Fatal(err)
	}
	if len(localB.items) != forwarded || route.InFlight() != 1 {
		t.Fatalf("resent before the ack timeout: b has %d (was %d), %d in flight", len(localB.items), forwarded, route.InFlight())
	}
	route.SetAckTimeout(time.Nanosecond)
	time.Sleep(time.Millisecond)
	if err := route.Resend(ctx); err != nil {
		t.Fatal(err)
	}
	if len(localB.items) != 2*forwarded || testutil.ToFloat64(m.ackTimeouts) != 1 {
		t.Fatalf("after the ack timeout b holds %d spans (want %d), ack timeouts %v",
			len(localB.items), 2*forwarded, testutil.ToFloat64(m.ackTimeouts))
	}
	// The new copy settles the source once acknowledged; the old one is gone.
	for _, it := range localA.items {
		it.Span.Src.Done()
	}
	var seqs []uint64
	tr.rc.mu.Lock()
	for _, r := range tr.rc.pending {
		seqs = append(seqs, r.seq)
	}
	tr.rc.mu.Unlock()
	route.Acked("b", seqs)
	if !src.Settled() || route.InFlight() != 0 {
		t.Fatalf("after the ack: settled=%v inflight=%d", src.Settled(), route.InFlight())
	}
}

// TestRouteReroutesWhenPeerLost covers a peer that took batches and died,
// and came back under the same name before the ring changed: its new
// process never acknowledges the old one's batches. As soon as the
// connection breaks, their spans wait to be routed again, holding the
// watermark until they are, instead of waiting out the ack timeout while
// the owner decides their traces without them.
func TestRouteReroutesWhenPeerLost(t *testing.T) {
	ctx := context.Background()
	localA, localB := &recorder{}, &recorder{}
	tr := &loopTransport{rc: NewReceiver(localB, nil)}
	route := NewRoute(localA, tr, nil, nil)
	route.SetRing(fakeRing{members: map[string]bool{"a": true, "b": true}})
	src := sampler.Pending{TS: 1_700_000_000_000_000_000}
	items := scanAll(t, testMessage(t, 20, 3), &src)
	if err := route.Add(ctx, items); err != nil {
		t.Fatal(err)
	}
	forwarded := len(localB.items)
	tr.rc.mu.Lock()
	oldSeq := tr.rc.pending[0].seq
	tr.rc.mu.Unlock()

	route.PeerLost("c") // another peer: nothing of b's moves
	if route.InFlight() != 1 || route.OldestOrphan() != 0 {
		t.Fatalf("losing c moved b's batch: %d in flight, oldest orphan %d", route.InFlight(), route.OldestOrphan())
	}
	route.PeerLost("b")
	if route.InFlight() != 0 || route.OldestOrphan() != src.TS {
		t.Fatalf("after losing b: %d in flight, oldest orphan %d (want %d)", route.InFlight(), route.OldestOrphan(), src.TS)
	}
	if err := route.Resend(ctx); err != nil {
		t.Fatal(err)
	}
	if len(localB.items) != 2*forwarded || route.InFlight() != 1 || route.OldestOrphan() != 0 {
		t.Fatalf("after resend b holds %d spans (want %d), %d in flight", len(localB.items), 2*forwarded, route.InFlight())
	}
	// The old process's acknowledgement settles nothing; the new one's does.
	for _, it := range localA.items {
		it.Span.Src.Done()
	}
	route.Acked("b", []uint64{oldSeq})
	if src.Settled() || route.InFlight() != 1 {
		t.Fatalf("the lost batch's acknowledgement settled the resent one (in flight %d)", route.InFlight())
	}
	tr.rc.mu.Lock()
	newSeq := tr.rc.pending[1].seq
	tr.rc.mu.Unlock()
	route.Acked("b", []uint64{newSeq})
	if !src.Settled() || route.InFlight() != 0 {
		t.Fatalf("after the ack: settled=%v inflight=%d", src.Settled(), route.InFlight())
	}
}

// TestRouteRestartDoesNotTakeOldAcks: a node restarts while a peer still
// holds batches from its previous process. The peer's acknowledgements of
// those must not settle the new process's batches.
func TestRouteRestartDoesNotTakeOldAcks(t *testing.T) {
	ctx := context.Background()
	localB := &recorder{}
	tr := &loopTransport{rc: NewReceiver(localB, nil)}
	ring := fakeRing{members: map[string]bool{"a": true, "b": true}}
	old := NewRoute(&recorder{}, tr, nil, nil)
	old.SetRing(ring)
	var src1 sampler.Pending
	if err := old.Add(ctx, scanAll(t, testMessage(t, 20, 3), &src1)); err != nil {
		t.Fatal(err)
	}
	// a restarts: a new Route, a new batch to b.
	time.Sleep(time.Microsecond)
	restarted := NewRoute(&recorder{}, tr, nil, nil)
	restarted.SetRing(ring)
	var src2 sampler.Pending
	items2 := scanAll(t, testMessage(t, 20, 3), &src2)
	for _, it := range items2 {
		if it.TraceID[15]&1 == 0 {
			it.Span.Src.Done() // the local ones are settled here
		}
	}
	if err := restarted.Add(ctx, items2); err != nil {
		t.Fatal(err)
	}
	// b settles the old process's batch only, and acknowledges it.
	tr.rc.mu.Lock()
	oldBatch := tr.rc.pending[0]
	tr.rc.mu.Unlock()
	restarted.Acked("b", []uint64{oldBatch.seq})
	if src2.Settled() || restarted.InFlight() != 1 {
		t.Fatalf("an acknowledgement meant for the previous process settled the new one's batch (in flight %d)", restarted.InFlight())
	}
}

// BenchmarkScanRoute is the per-span hot path of a node: scan a record,
// pick the owner of every span, append it to its batch. With two nodes half
// the spans are encoded into a batch for the other node, and acknowledged.
func BenchmarkScanRoute(b *testing.B) {
	msg := testMessage(b, 50, 10) // 500 spans
	const spans = 500
	for _, members := range []map[string]bool{{"a": true}, {"a": true, "b": true}} {
		b.Run(fmt.Sprintf("%d-nodes", len(members)), func(b *testing.B) {
			sc, _ := NewScanner(EncodingProto)
			tr := &nopTransport{}
			route := NewRoute(nopDispatcher{}, tr, nil, nil)
			route.SetRing(fakeRing{members: members})
			var src sampler.Pending
			ctx := context.Background()
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				items, err := sc.Scan(msg, &src)
				if err != nil {
					b.Fatal(err)
				}
				src.Add(len(items))
				if err := route.Add(ctx, items); err != nil {
					b.Fatal(err)
				}
				route.Acked("b", tr.seqs)
				tr.seqs = tr.seqs[:0]
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*spans), "ns/span")
		})
	}
}

// nopTransport takes every batch and remembers its sequence number.
type nopTransport struct{ seqs []uint64 }

func (t *nopTransport) Send(_ context.Context, _ string, _ []byte, seq uint64) error {
	t.seqs = append(t.seqs, seq)
	return nil
}

type nopDispatcher struct{}

func (nopDispatcher) Add(context.Context, []sampler.Item) error { return nil }
