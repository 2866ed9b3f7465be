package cluster

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/tailsift/tailsift/router"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// benchBatch builds a forwarded batch as router.Route does: an OTLP message
// of traces×spans realistic spans (random IDs, HTTP and DB attributes, two
// services), scanned and re-encoded with router.AppendBatch.
func benchBatch(b testing.TB, traces, spans int) []byte {
	b.Helper()
	td := ptrace.NewTraces()
	for svc := range 2 {
		rs := td.ResourceSpans().AppendEmpty()
		ra := rs.Resource().Attributes()
		ra.PutStr("service.name", fmt.Sprintf("checkout-%d", svc))
		ra.PutStr("service.version", "1.42.0")
		ra.PutStr("host.name", fmt.Sprintf("ip-10-0-%d-17.ec2.internal", svc))
		ra.PutStr("k8s.pod.name", fmt.Sprintf("checkout-7f9c8d6b5-x%dq2z", svc))
		ra.PutStr("telemetry.sdk.language", "go")
		rs.SetSchemaUrl("https://opentelemetry.io/schemas/1.26.0")
		ss := rs.ScopeSpans().AppendEmpty()
		ss.Scope().SetName("go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp")
		ss.Scope().SetVersion("0.53.0")
		for tr := svc; tr < traces; tr += 2 {
			var tid [16]byte
			rand.Read(tid[:])
			var root [8]byte
			rand.Read(root[:])
			for s := range spans {
				sp := ss.Spans().AppendEmpty()
				sp.SetTraceID(tid)
				var sid [8]byte
				rand.Read(sid[:])
				if s == 0 {
					sid = root
				} else {
					sp.SetParentSpanID(root)
				}
				sp.SetSpanID(sid)
				start := 1_700_000_000_000_000_000 + int64(tr)*1e9 + int64(s)*1e6
				sp.SetStartTimestamp(pcommon.Timestamp(start))
				sp.SetEndTimestamp(pcommon.Timestamp(start + 2_345_678))
				sp.SetKind(ptrace.SpanKindServer)
				a := sp.Attributes()
				if s%3 == 2 {
					sp.SetName("SELECT orders")
					a.PutStr("db.system", "postgresql")
					a.PutStr("db.statement", "SELECT id, total, status FROM orders WHERE customer_id = $1 LIMIT 50")
				} else {
					sp.SetName("GET /api/v1/cart/{id}")
					a.PutStr("http.request.method", "GET")
					a.PutStr("url.path", fmt.Sprintf("/api/v1/cart/%d", tr*7919+s))
					a.PutInt("http.response.status_code", 200)
					a.PutStr("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36")
				}
			}
		}
	}
	msg, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		b.Fatal(err)
	}
	sc, err := router.NewScanner(router.EncodingProto)
	if err != nil {
		b.Fatal(err)
	}
	items, err := sc.Scan(msg, nil)
	if err != nil {
		b.Fatal(err)
	}
	if len(items) != traces*spans {
		b.Fatalf("scanned %d spans, want %d", len(items), traces*spans)
	}
	return router.AppendBatch(nil, items)
}

// discard is a Handler that drops batches: the benchmark measures the
// transport, not the sampler.
type discard struct{}

func (discard) Handle(context.Context, string, []byte, uint64) error { return nil }
func (discard) Acked(string, []uint64)                               {}
func (discard) PeerLost(string)                                      {}

// BenchmarkTransportSend forwards 500-span batches between two nodes on
// loopback: one sender waiting for each receipt (as router.Route does),
// and 8 concurrent senders (pipelined on the one connection), with and
// without s2 compression. MB/s counts the uncompressed batch.
func BenchmarkTransportSend(b *testing.B) {
	const spans = 500
	batch := benchBatch(b, 50, 10)
	for _, comp := range []bool{true, false} {
		for _, par := range []int{1, 8} {
			name := fmt.Sprintf("s2=%v/senders=%d", comp, par)
			b.Run(name, func(b *testing.B) {
				var dir directory
				noComp := func(c *TransportConfig) { c.noCompression = !comp }
				a := startTransport(b, &dir, "a", "", nil, discard{}, noComp)
				startTransport(b, &dir, "b", "", nil, discard{}, noComp)
				ctx := context.Background()
				if err := a.Send(ctx, "b", batch, 0); err != nil { // connect first
					b.Fatal(err)
				}
				b.SetBytes(int64(len(batch)))
				b.ReportAllocs()
				b.ResetTimer()
				if par == 1 {
					for i := 0; b.Loop(); i++ {
						if err := a.Send(ctx, "b", batch, uint64(i)); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					b.SetParallelism(par)
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if err := a.Send(ctx, "b", batch, 1); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				b.ReportMetric(float64(b.N)*spans/b.Elapsed().Seconds(), "spans/s")
				wire := a.appendPayload(nil, frameBatch, 1, 1, batch)
				b.ReportMetric(float64(len(wire))/float64(len(batch)), "wire/raw")
			})
		}
	}
}
