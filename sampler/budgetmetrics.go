package sampler

import "github.com/prometheus/client_golang/prometheus"

// BudgetCollector exports the cost cap's state at each scrape. It reads
// whatever policy is current, so it follows reloads; a reload starts a new
// cap whose counters start from zero, which Prometheus takes as a reset.
type BudgetCollector struct {
	current func() Policy

	spansRate, bytesRate, prob, keptSpans, keptTraces, dropped, bucketDrops *prometheus.Desc
}

// NewBudgetCollector returns a collector for the cap current returns, if
// the policy is a *Budget; with any other policy it exports the cap's
// series as they read without a cap.
func NewBudgetCollector(current func() Policy) *BudgetCollector {
	class := []string{"class"}
	return &BudgetCollector{
		current: current,
		spansRate: prometheus.NewDesc("tailsift_sampler_budget_spans_per_second",
			"This node's share of the cluster's cost cap, in kept spans per second.", nil, nil),
		bytesRate: prometheus.NewDesc("tailsift_sampler_budget_bytes_per_second",
			"This node's share of the cluster's cost cap, in kept span bytes per second.", nil, nil),
		prob: prometheus.NewDesc("tailsift_sampler_budget_keep_probability",
			"The cap's current keep probability for traces the policies keep, by priority class (errors: the class's average).", class, nil),
		keptSpans: prometheus.NewDesc("tailsift_sampler_budget_kept_spans_total",
			"Spans of the traces the cap let through, by priority class.", class, nil),
		keptTraces: prometheus.NewDesc("tailsift_sampler_budget_kept_traces_total",
			"Traces the cap let through, by priority class.", class, nil),
		dropped: prometheus.NewDesc("tailsift_sampler_budget_dropped_traces_total",
			"Traces the policies kept and the cap dropped, by priority class.", class, nil),
		bucketDrops: prometheus.NewDesc("tailsift_sampler_budget_bucket_drops_total",
			"Of the cap's drops, those made by its backstop token bucket because the prediction fell short, by priority class.", class, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *BudgetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.spansRate, c.bytesRate, c.prob, c.keptSpans, c.keptTraces, c.dropped, c.bucketDrops} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *BudgetCollector) Collect(ch chan<- prometheus.Metric) {
	b, ok := c.current().(*Budget)
	if !ok {
		// No cap: its series are exported all the same, so the
		// dashboard's budget panels show "no cap" (a rate of 0, nothing
		// kept or dropped by it, every kept trace let through) rather
		// than no data, and start from zero when a reload adds a cap.
		ch <- prometheus.MustNewConstMetric(c.spansRate, prometheus.GaugeValue, 0)
		for cl := range numClasses {
			name := classNames[cl]
			ch <- prometheus.MustNewConstMetric(c.prob, prometheus.GaugeValue, 1, name)
			for _, d := range []*prometheus.Desc{c.keptSpans, c.keptTraces, c.dropped, c.bucketDrops} {
				ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, 0, name)
			}
		}
		return
	}
	st := b.Stats()
	rate := c.spansRate
	if st.Bytes {
		rate = c.bytesRate
	}
	ch <- prometheus.MustNewConstMetric(rate, prometheus.GaugeValue, st.Rate)
	for cl := range numClasses {
		name := classNames[cl]
		ch <- prometheus.MustNewConstMetric(c.prob, prometheus.GaugeValue, st.Probability[cl], name)
		ch <- prometheus.MustNewConstMetric(c.keptSpans, prometheus.CounterValue, float64(st.KeptSpans[cl]), name)
		ch <- prometheus.MustNewConstMetric(c.keptTraces, prometheus.CounterValue, float64(st.Kept[cl]), name)
		ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(st.Offered[cl]-st.Kept[cl]), name)
		ch <- prometheus.MustNewConstMetric(c.bucketDrops, prometheus.CounterValue, float64(st.BucketDrops[cl]), name)
	}
}
