package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// TestOverLimitAndCollidingTraces runs a node with a span limit of 100 and
// the default policy against two kinds of hostile input, and reads the
// archive with DuckDB.
//
// A trace of 350 spans whose only error is on its root, which arrives
// last: its first three pieces of 100 spans are dropped at the limit, the
// last piece (with the root) keeps it; that piece and the spans arriving
// after the decision are archived with keep_reason "error" and sample rate
// 1, and the 300 spans lost are counted.
//
// Two traces whose IDs share their last 8 bytes (and so their sampling
// randomness, which the default 5% drops): one without error, dropped
// first, then one with an error, which must be archived whole.
//
// All IDs have randomness 0, so only an error keeps them.
func TestOverLimitAndCollidingTraces(t *testing.T) {
	b, client := startBroker(t, 1)
	dir := t.TempDir()
	n, stop := startTestNode(t, b.Addr(), "otlp_spans", dir, func(c *Config) {
		c.Sampler.MaxSpansPerTrace = 100
	})
	addr := n.httpLn.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	produce := func(recs ...*kgo.Record) {
		t.Helper()
		if err := client.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	waitMetric := func(what string, ok func(m metricSet) bool) {
		t.Helper()
		for !ok(scrapeMetrics(t, addr)) {
			select {
			case <-ctx.Done():
				t.Fatalf("%s: not within the test's deadline", what)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}

	dropped := pcommon.TraceID{0xd0, 1, 2, 3, 4, 5, 6, 7, 0x5a}
	errored := pcommon.TraceID{0xe0, 9, 9, 9, 9, 9, 9, 9, 0x5a} // bytes 8-15 as dropped's
	big := pcommon.TraceID{0xb1, 6, 6, 6, 6, 6, 6, 6, 0x77}

	produce(spansRecord(t, dropped, 0, 3, false))
	waitMetric("the first trace dropped", func(m metricSet) bool {
		return m.sum("tailsift_sampler_traces_decided_total", "decision=drop") >= 1
	})
	produce(spansRecord(t, errored, 0, 3, true))
	for from := 300; from >= 0; from -= 50 {
		produce(spansRecord(t, big, from, from+50, true)) // the root, span 0, comes last
	}
	waitMetric("the big trace kept on its last piece", func(m metricSet) bool {
		return m.sum("tailsift_sampler_overlimit_traces_kept_late_total") == 1 &&
			m.sum("tailsift_sampler_traces_decided_total", "decision=keep") == 2
	})
	produce(spansRecord(t, big, 350, 370, false))
	waitMetric("the big trace's spans after the decision sent to the archive as late", func(m metricSet) bool {
		return m.sum("tailsift_sampler_late_spans_total", "decision=keep") == 20 &&
			m.sum("tailsift_sampler_spans_kept_total") == 3+50+20
	})
	m := scrapeMetrics(t, addr)
	if got := m.sum("tailsift_sampler_overlimit_spans_lost_total"); got != 300 {
		t.Errorf("spans lost counted: %v, want 300", got)
	}
	stop()

	db := openDuckDB(t)
	type traceRows struct {
		rows, late, errors, rate1 int
		reasons                   string
	}
	q := fmt.Sprintf(`SELECT trace_id, count(*)::BIGINT, count(*) FILTER (late)::BIGINT,
			count(*) FILTER (status_code = 'ERROR')::BIGINT, count(*) FILTER (sample_rate = 1)::BIGINT,
			string_agg(DISTINCT keep_reason, ',')
		FROM read_parquet('%s/**/*.parquet', hive_partitioning = true) GROUP BY trace_id`, dir)
	rows, err := db.Query(q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]traceRows{}
	for rows.Next() {
		var id string
		var r traceRows
		if err := rows.Scan(&id, &r.rows, &r.late, &r.errors, &r.rate1, &r.reasons); err != nil {
			t.Fatal(err)
		}
		got[id] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	hexID := func(id pcommon.TraceID) string { return hex.EncodeToString(id[:]) }
	for _, c := range []struct {
		name string
		id   pcommon.TraceID
		want traceRows
	}{
		{"over the limit, error on the root", big, traceRows{rows: 70, late: 20, errors: 1, rate1: 70, reasons: "error"}},
		{"error trace sharing 8 ID bytes with a dropped one", errored, traceRows{rows: 3, errors: 1, rate1: 3, reasons: "error"}},
		{"dropped trace", dropped, traceRows{}},
	} {
		if g := got[hexID(c.id)]; g != c.want {
			t.Errorf("%s: archived %+v, want %+v", c.name, g, c.want)
		}
	}
	if len(got) != 2 {
		t.Errorf("%d traces archived, want 2: %v", len(got), got)
	}
}

// spansRecord encodes spans from..to-1 of trace id as one record, in
// reverse order: span 0 is the root (with an error status if errRoot),
// every other span its child. Spans last 1ms, so no trace is slow.
func spansRecord(t *testing.T, id pcommon.TraceID, from, to int, errRoot bool) *kgo.Record {
	t.Helper()
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "overlimit")
	spans := rs.ScopeSpans().AppendEmpty().Spans()
	start := time.Now().Add(-time.Second)
	for i := to - 1; i >= from; i-- {
		sp := spans.AppendEmpty()
		sp.SetTraceID(id)
		sp.SetSpanID(pcommon.SpanID{0x5b, 6: byte(i >> 8), 7: byte(i) + 1})
		sp.SetName(fmt.Sprintf("span %d", i))
		if i > 0 {
			sp.SetParentSpanID(pcommon.SpanID{0x5b, 7: 1})
		} else if errRoot {
			sp.Status().SetCode(ptrace.StatusCodeError)
		}
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(time.Millisecond)))
	}
	v, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: "otlp_spans", Value: v}
}
