package sampler

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// waitHistogram is a Prometheus histogram that shards observe into in
// batches: each counts its decisions into its own waitCounts and adds them
// here when it publishes. prometheus.Histogram takes three atomic updates
// per observation, on memory every shard writes; a shard decides hundreds
// of thousands of traces a second.
type waitHistogram struct {
	desc   *prometheus.Desc
	bounds []float64 // upper bounds, ascending

	mu     sync.Mutex
	counts []uint64 // per bucket, not cumulative; the last is +Inf
	count  uint64
	sum    float64
}

func newWaitHistogram(name, help string, bounds []float64) waitHistogram {
	return waitHistogram{
		desc:   prometheus.NewDesc(name, help, nil, nil),
		bounds: bounds,
		counts: make([]uint64, len(bounds)+1),
	}
}

// waitCounts are a shard's observations not yet added to a waitHistogram.
type waitCounts struct {
	counts []uint64
	count  uint64
	sum    float64
}

// observe counts v into w, bucketed as h is.
func (w *waitCounts) observe(h *waitHistogram, v float64) {
	if w.counts == nil {
		w.counts = make([]uint64, len(h.bounds)+1)
	}
	i := 0
	for i < len(h.bounds) && v > h.bounds[i] {
		i++
	}
	w.counts[i]++
	w.count++
	w.sum += v
}

// add moves w's observations into h.
func (h *waitHistogram) add(w *waitCounts) {
	if w.count == 0 {
		return
	}
	h.mu.Lock()
	for i, n := range w.counts {
		h.counts[i] += n
	}
	h.count += w.count
	h.sum += w.sum
	h.mu.Unlock()
	clear(w.counts)
	w.count, w.sum = 0, 0
}

// Describe implements prometheus.Collector.
func (h *waitHistogram) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

// Collect implements prometheus.Collector.
func (h *waitHistogram) Collect(ch chan<- prometheus.Metric) {
	h.mu.Lock()
	buckets := make(map[float64]uint64, len(h.bounds))
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i]
		buckets[b] = cum
	}
	count, sum := h.count, h.sum
	h.mu.Unlock()
	ch <- prometheus.MustNewConstHistogram(h.desc, count, sum, buckets)
}
