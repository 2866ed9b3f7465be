package archive

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tailsift/tailsift/bench/gen"
	"github.com/tailsift/tailsift/router"
	"github.com/tailsift/tailsift/sampler"
)

// genKept returns the generator's traffic (n traces, seed 1) as kept traces,
// the way the sampler hands them to the archive: spans still encoded, each
// aliasing the Kafka message it came in.
func genKept(tb testing.TB, n int) (kept []*sampler.Kept, spans int) {
	tb.Helper()
	sc, _ := router.NewScanner(router.EncodingProto)
	byID := map[sampler.TraceID]*sampler.Kept{}
	decided := time.Now()
	// Roots start over about two minutes from Start; from the top of the
	// hour they stay in one Hive partition (hour) whenever the test runs,
	// where from now they would cross into the next hour in its last two
	// minutes, and the archive would write a file for each.
	start := decided.UTC().Truncate(time.Hour)
	_, err := gen.Generate(gen.Config{Seed: 1, Traces: n, Start: start}, func(msg []byte) error {
		items, err := sc.Scan(msg, nil)
		if err != nil {
			return err
		}
		for _, it := range items {
			k := byID[it.TraceID]
			if k == nil {
				k = &sampler.Kept{ID: it.TraceID, SampleRate: 20, Reason: "probabilistic", DecidedAt: decided,
					RootService: it.Span.Scope.Service, Start: it.Span.Start}
				byID[it.TraceID] = k
				kept = append(kept, k)
			}
			k.Spans = append(k.Spans, it.Span)
			k.SpanCount = len(k.Spans)
			spans++
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return kept, spans
}

// BenchmarkWrite measures the archive's cost per kept span: decoding the
// span into a row, sorting, Parquet encoding with zstd, and closing the file
// (footer, fsync, rename). It reports the bytes each span takes on disk.
func BenchmarkWrite(b *testing.B) {
	kept, spans := genKept(b, 5_000) // about 40,000 spans: a few row groups
	// Spans are handed over without their slices (the writer clears
	// Kept.Spans); keep a copy to restore them each round.
	orig := make([][]sampler.Span, len(kept))
	for i, k := range kept {
		orig[i] = k.Spans
	}
	// One Writer for the whole run, as in a node: each round writes the
	// traces into a new file and closes it.
	m := NewMetrics(nil)
	w, err := New(context.Background(), Config{URL: "file://" + b.TempDir(), NodeID: "bench"}, m)
	if err != nil {
		b.Fatal(err)
	}
	var before, written float64
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		for i, k := range kept {
			k.Spans = orig[i]
		}
		w.recent = recentSpans{} // the same spans again are not copies here
		before = testutil.ToFloat64(m.bytes)
		b.StartTimer()
		for _, k := range kept {
			if err := w.add(k); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.closeAll(); err != nil {
			b.Fatal(err)
		}
		written = testutil.ToFloat64(m.bytes) - before
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*spans), "ns/span")
	b.ReportMetric(written/float64(spans), "disk-B/span")
}
