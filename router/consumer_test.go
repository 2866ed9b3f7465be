package router

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tailsift/tailsift/internal/otlpwire"
	"github.com/tailsift/tailsift/sampler"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protowire"
)

// rawSpan is a Span message built field by field, so that IDs of any length
// can be written (pdata only has well-formed ones).
type rawSpan struct {
	traceID, spanID, parentID []byte
	start, end                uint64
}

func (s rawSpan) encode() []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, s.traceID)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, s.spanID)
	if s.parentID != nil {
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendBytes(b, s.parentID)
	}
	b = protowire.AppendTag(b, 5, protowire.BytesType)
	b = protowire.AppendString(b, "op")
	b = protowire.AppendTag(b, 7, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, s.start)
	b = protowire.AppendTag(b, 8, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, s.end)
	return b
}

// message encodes spans as one TracesData.
func message(spans ...rawSpan) []byte {
	var enc [][]byte
	for _, s := range spans {
		enc = append(enc, s.encode())
	}
	return otlpwire.AppendResourceSpans(nil, nil, nil, nil, nil, slices.Values(enc))
}

// TestConsumerSurvivesBadInput feeds a node every kind of bad input at once
// through a real broker: an oversized and a malformed message, spans with
// all-zero or wrong-length IDs, timestamps far in the future or past, and
// a hot trace ID written to every partition. Each is counted by kind, the
// good spans around them all arrive, and every offset is committed.
func TestConsumerSurvivesBadInput(t *testing.T) {
	const topic, parts = "spans", 8
	b, prod := startBroker(t, topic, parts)

	now := uint64(time.Now().UnixNano())
	id := func(n, size int, tag byte) []byte {
		out := make([]byte, size)
		out[0], out[size-1] = tag, byte(n)
		return out
	}
	good := func(n int) rawSpan {
		return rawSpan{traceID: id(n, 16, 1), spanID: id(n, 8, 1), start: now, end: now + 1000}
	}
	hotID := id(0, 16, 0xee)
	const hotPerPartition = 300 // 2,400 spans in all, over the limit of 1,000
	var recs []*kgo.Record
	valid := 0
	add := func(p int32, v []byte) { recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Value: v}) }
	for p := int32(0); p < parts; p++ {
		var hot []rawSpan
		for i := 0; i < hotPerPartition; i++ {
			hot = append(hot, rawSpan{traceID: hotID, spanID: id(int(p)*1000+i, 8, 2), parentID: id(1, 8, 9), start: now, end: now + 1})
		}
		add(p, message(hot...))
		add(p, message(good(int(p)), good(100+int(p))))
		valid += hotPerPartition + 2
	}
	bad := []rawSpan{
		{traceID: make([]byte, 16), spanID: id(1, 8, 3), start: now, end: now},                     // all-zero trace ID
		{traceID: id(2, 8, 3), spanID: id(2, 8, 3), start: now, end: now},                          // 8-byte trace ID
		{traceID: id(3, 16, 3), spanID: make([]byte, 8), start: now, end: now},                     // all-zero span ID
		{traceID: id(4, 16, 3), spanID: id(4, 4, 3), start: now, end: now},                         // 4-byte span ID
		{traceID: id(5, 16, 3), spanID: id(5, 8, 3), start: now + 48*3600e9, end: now + 48*3600e9}, // two days ahead
		{traceID: id(6, 16, 3), spanID: id(6, 8, 3), start: 1e9, end: 2e9},                         // 1970
		{traceID: id(7, 16, 3), spanID: id(7, 8, 3), start: now, end: now - 1e9},                   // ends before it starts
	}
	add(0, message(bad...))
	valid += 3                                         // the skewed spans are kept
	add(1, []byte{0x0a, 0xff, 0xff, 0xff, 0x0f, 1, 2}) // a length past the end
	add(2, make([]byte, 40<<10))                       // over max_message_bytes
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	smpCfg := sampler.Config{Shards: 2, MaxSpansPerTrace: 1000, QuietPeriod: 200 * time.Millisecond, MaxWait: time.Second}
	if err := smpCfg.Validate(); err != nil {
		t.Fatal(err)
	}
	kept := make(chan *sampler.Kept, 64)
	reg := prometheus.NewRegistry()
	smp := sampler.New(smpCfg, sampler.DefaultPolicy(), kept, sampler.NewMetrics(reg), nil)
	cfg := Config{Brokers: []string{b.Addr()}, Topic: topic, Group: "g", MaxMessageBytes: 32 << 10,
		CommitInterval: 200 * time.Millisecond, FetchMaxWait: 200 * time.Millisecond, SessionTimeout: 6 * time.Second}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(nil)
	c, err := NewConsumer(cfg, smp, m)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	drained := make(chan struct{})
	wg.Go(func() { smp.Run(runCtx) })
	wg.Go(func() {
		defer close(drained)
		for k := range kept { // the archive: every kept span is durable at once
			for i := range k.Spans {
				k.Spans[i].Src.Done()
			}
		}
	})
	wg.Go(func() { c.Run(runCtx, drained, 10*time.Second) })

	// The node goes on: every offset gets committed.
	adm := kadm.NewClient(prod)
	for {
		lag, err := adm.Lag(ctx, "g")
		if err == nil && lag["g"].Lag.Total() == 0 && len(lag["g"].Lag[topic]) == parts && lag["g"].FetchErr == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("offsets not all committed: %v %+v", err, lag["g"].Lag)
		}
		time.Sleep(200 * time.Millisecond)
	}
	stop()
	wg.Wait()

	counts := []struct {
		name string
		got  float64
		want float64
	}{
		{"malformed oversized", testutil.ToFloat64(m.malformed.WithLabelValues(badOversized)), 1},
		{"malformed protobuf", testutil.ToFloat64(m.malformed.WithLabelValues(badProto)), 1},
		{"invalid trace_id", testutil.ToFloat64(m.invalidSpans.WithLabelValues(badTraceID)), 2},
		{"invalid span_id", testutil.ToFloat64(m.invalidSpans.WithLabelValues(badSpanID)), 2},
		{"skewed future", testutil.ToFloat64(m.skewedSpans.WithLabelValues("future")), 1},
		{"skewed past", testutil.ToFloat64(m.skewedSpans.WithLabelValues("past")), 1},
		{"skewed end_before_start", testutil.ToFloat64(m.skewedSpans.WithLabelValues("end_before_start")), 1},
		{"spans received", testutil.ToFloat64(m.spans), float64(valid)},
		{"records", testutil.ToFloat64(m.records), float64(len(recs))},
	}
	for _, c := range counts {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
	// The hot trace, sent on every partition, was dropped at the span limit,
	// and decided again on each later piece: 2,400 spans reach the limit of
	// 1,000 twice, unless a piece waited its maximum first.
	var spanLimit float64
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			if mf.GetName() == "tailsift_sampler_traces_completed_total" && mt.GetLabel()[0].GetValue() == "span_limit" {
				spanLimit = mt.GetCounter().GetValue()
			}
		}
	}
	if spanLimit < 1 || spanLimit > 2 {
		t.Errorf("traces decided at the span limit: %v, want 1 or 2", spanLimit)
	}
}
