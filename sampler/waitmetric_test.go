package sampler

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

var waitBounds = []float64{0.1, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120}

// TestWaitHistogramMatchesPrometheus observes the same values, bounds
// included, into a waitHistogram through two shards' counts and into a
// prometheus.Histogram: the exposition must be the same.
func TestWaitHistogramMatchesPrometheus(t *testing.T) {
	h := newWaitHistogram("wait_seconds", "help", waitBounds)
	want := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "wait_seconds", Help: "help", Buckets: waitBounds})
	var a, b waitCounts
	r := rand.New(rand.NewPCG(1, 2))
	vals := append([]float64{0, 0.1, 3, 120, 121}, waitBounds...)
	for range 1000 {
		vals = append(vals, r.Float64()*150)
	}
	for i, v := range vals {
		w := &a
		if i%3 == 0 {
			w = &b
		}
		w.observe(&h, v)
		want.Observe(v)
		if i%100 == 0 {
			h.add(&a)
		}
	}
	h.add(&a)
	h.add(&b)
	h.add(&b) // nothing left: adds nothing
	got, exp := histogramOf(t, &h), histogramOf(t, want)
	// The sum is added up in another order: equal to rounding.
	if got.GetSampleCount() != exp.GetSampleCount() || math.Abs(got.GetSampleSum()-exp.GetSampleSum()) > 1e-9*exp.GetSampleSum() {
		t.Fatalf("count, sum %d, %g; prometheus.Histogram %d, %g",
			got.GetSampleCount(), got.GetSampleSum(), exp.GetSampleCount(), exp.GetSampleSum())
	}
	if len(got.Bucket) != len(exp.Bucket) {
		t.Fatalf("%d buckets, want %d", len(got.Bucket), len(exp.Bucket))
	}
	for i := range exp.Bucket {
		if g, e := got.Bucket[i], exp.Bucket[i]; g.GetUpperBound() != e.GetUpperBound() || g.GetCumulativeCount() != e.GetCumulativeCount() {
			t.Errorf("bucket %d: le %g count %d; prometheus.Histogram le %g count %d",
				i, g.GetUpperBound(), g.GetCumulativeCount(), e.GetUpperBound(), e.GetCumulativeCount())
		}
	}
	if n := testutil.CollectAndCount(&h); n != 1 {
		t.Fatalf("%d metrics collected, want 1", n)
	}
}

// histogramOf collects c's one metric, a histogram.
func histogramOf(t *testing.T, c prometheus.Collector) *dto.Histogram {
	t.Helper()
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Histogram == nil {
		t.Fatal("not a histogram")
	}
	return m.Histogram
}

// BenchmarkDecisionMetrics compares what deciding a trace costs in metrics,
// on two goroutines as on a node's two shards: updating the Prometheus
// metrics as each trace is decided (a labelled counter, the wait
// histogram, the dropped spans) against counting them in the shard and
// adding the counts every 64 decisions, as a shard publishes.
func BenchmarkDecisionMetrics(b *testing.B) {
	b.Run("each", func(b *testing.B) {
		m := NewMetrics(nil)
		hist := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "w", Buckets: waitBounds})
		c := m.decided.WithLabelValues("drop", "probabilistic")
		b.RunParallel(func(pb *testing.PB) {
			v := 0.0
			for pb.Next() {
				c.Inc()
				hist.Observe(3 + v)
				m.spansDropped.Add(8)
				v += 1e-9
			}
		})
	})
	b.Run("batched", func(b *testing.B) {
		m := NewMetrics(nil)
		b.RunParallel(func(pb *testing.PB) {
			var cc counterCache
			var w waitCounts
			var dropped uint64
			v, n := 0.0, 0
			for pb.Next() {
				cc.count(m.decided, "drop", "probabilistic")
				w.observe(&m.decisionWait, 3+v)
				dropped += 8
				v += 1e-9
				if n++; n%64 == 0 {
					cc.flush()
					m.decisionWait.add(&w)
					addCount(m.spansDropped, &dropped)
				}
			}
		})
	})
}
