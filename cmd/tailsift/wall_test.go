package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tailsift/tailsift/router"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// collectorRecords returns n records as the Collector's kafkaexporter
// writes them in encoding (pdata's marshalers), one error trace of three
// spans each, so the default policy keeps every span. Each span carries
// the attribute secret=<marker>-<i>, which no log line may quote.
func collectorRecords(t *testing.T, encoding, marker string, n int) [][]byte {
	t.Helper()
	var out [][]byte
	now := time.Now()
	for i := range n {
		td := ptrace.NewTraces()
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", "checkout")
		spans := rs.ScopeSpans().AppendEmpty().Spans()
		tid := pcommon.TraceID{0xab, byte(i >> 8), byte(i), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}
		for j := range 3 {
			s := spans.AppendEmpty()
			s.SetTraceID(tid)
			s.SetSpanID(pcommon.SpanID{0xcd, byte(i >> 8), byte(i), byte(j + 1), 1, 2, 3, 4})
			if j > 0 {
				s.SetParentSpanID(pcommon.SpanID{0xcd, byte(i >> 8), byte(i), 1, 1, 2, 3, 4})
			}
			s.SetName("charge-card")
			s.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Duration(j) * time.Millisecond)))
			s.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Duration(j+1) * time.Millisecond)))
			s.Status().SetCode(ptrace.StatusCodeError)
			s.Attributes().PutStr("secret", fmt.Sprintf("%s-%d", marker, i))
		}
		var b []byte
		var err error
		if encoding == router.EncodingJSON {
			b, err = (&ptrace.JSONMarshaler{}).MarshalTraces(td)
		} else {
			b, err = (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// produceValues writes values to topic, keyed so they spread over its
// partitions.
func produceValues(ctx context.Context, t *testing.T, client *kgo.Client, topic string, values [][]byte) {
	t.Helper()
	var recs []*kgo.Record
	for i, v := range values {
		recs = append(recs, &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "k%d", i), Value: v})
	}
	if err := client.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// readyz returns the node's /readyz status and body.
func readyz(t *testing.T, n *node) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + n.httpLn.Addr().String() + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestWallOfBadRecordsStopsTheLine writes a topic in one encoding, as the
// Collector does, and starts a node told the other: the node stops every
// partition, turns not ready within seconds with advice naming
// kafka.encoding (in /readyz and the log), quotes no payload byte in any
// log line, and commits nothing. Restarted on the same group with the
// setting fixed, it archives every span.
func TestWallOfBadRecordsStopsTheLine(t *testing.T) {
	for _, tc := range []struct {
		written, told, advice, reason string
	}{
		{router.EncodingJSON, router.EncodingProto, "set kafka.encoding: otlp_json", "looks_like_otlp_json"},
		{router.EncodingProto, router.EncodingJSON, "set kafka.encoding: otlp_proto", "looks_like_otlp_proto"},
	} {
		t.Run(tc.written+" read as "+tc.told, func(t *testing.T) {
			const topic, parts, records = "otlp_spans", 4, 600
			b, client := startBroker(t, parts)
			marker := "hunter2-" + tc.written
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			produceValues(ctx, t, client, topic, collectorRecords(t, tc.written, marker, records))
			dir := t.TempDir()
			logs := &syncBuffer{}
			n, stop := startTestNodeLog(t, b.Addr(), topic, dir, func(c *Config) {
				c.Kafka.Encoding = tc.told
				c.Log.Format = "json"
			}, io.MultiWriter(logs, testLogWriter{t}))

			t0 := time.Now()
			var code int
			var body string
			for code, body = readyz(t, n); code != http.StatusServiceUnavailable || !strings.Contains(body, tc.advice); code, body = readyz(t, n) {
				if time.Since(t0) > time.Minute {
					t.Fatalf("/readyz = %d %q a minute after start, want 503 with %q", code, body, tc.advice)
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Logf("not ready %.1fs after start: %s", time.Since(t0).Seconds(), body)
			if got := gauge(n.reg, "tailsift_router_stopped_partitions"); got != parts {
				// Partitions stop as their walls are read; wait for all.
				deadline := time.Now().Add(time.Minute)
				for got != parts && time.Now().Before(deadline) {
					time.Sleep(100 * time.Millisecond)
					got = gauge(n.reg, "tailsift_router_stopped_partitions")
				}
				if got != parts {
					t.Fatalf("stopped partitions: %v, want %d", got, parts)
				}
			}
			for _, m := range gather(n.reg, "tailsift_router_stopped_partitions") {
				if labelValue(m, "reason") == tc.reason && m.GetGauge().GetValue() != parts {
					t.Errorf("stopped partitions with reason %s: %v, want %d", tc.reason, m.GetGauge().GetValue(), parts)
				}
			}
			stop()
			log := logs.String()
			if !strings.Contains(log, tc.advice) {
				t.Errorf("no log line advises %q", tc.advice)
			}
			for _, frag := range []string{marker, "charge-card", "checkout"} {
				if strings.Contains(log, frag) {
					t.Errorf("a log line quotes the payload (%q)", frag)
				}
			}
			adm := kadm.NewClient(client)
			if lag, err := adm.Lag(ctx, "e2e"); err == nil {
				for _, pl := range lag["e2e"].Lag[topic] {
					if pl.Commit.At > 0 {
						t.Errorf("partition %d committed to %d past its wall", pl.Partition, pl.Commit.At)
					}
				}
			}

			// Fixed and restarted on the same group: every span.
			n2, stop2 := startTestNode(t, b.Addr(), topic, dir, func(c *Config) {
				c.Kafka.Encoding = tc.written
				c.Archive.RollAge = time.Second
			})
			waitRecords(t, n2, records)
			if err := n2.sampler.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			waitCommitted(t, adm, "e2e", topic, 2*time.Minute)
			if code, body := readyz(t, n2); code != http.StatusOK {
				t.Errorf("fixed node: /readyz = %d %q", code, body)
			}
			stop2()
			got := archivedSpansByTrace(t, dir)
			spans := 0
			for _, c := range got {
				spans += c
			}
			if len(got) != records || spans != 3*records {
				t.Fatalf("archived %d traces, %d spans; want %d, %d", len(got), spans, records, 3*records)
			}
		})
	}
}
