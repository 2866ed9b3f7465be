package sampler

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestBudgetCollector runs a cap and checks the exported series against
// the cap's own counts, and that it follows the current policy.
func TestBudgetCollector(t *testing.T) {
	clk := newFakeClock()
	b, err := NewBudget(BudgetConfig{SpansPerSecond: 2000}, testChain(t), clk)
	if err != nil {
		t.Fatal(err)
	}
	b.SetShare(2)
	var current Policy = b
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewBudgetCollector(func() Policy { return current }))

	res := budgetRun(t, b, clk, newBudgetWorld(), 20, 1500, func(int) float64 { return 0.02 }, 0.05, 1)
	kept := 0.0
	for _, k := range res.keptPerSec {
		kept += k
	}
	var keptSpans, keptTraces, dropped, offered float64
	for _, c := range classNames {
		keptSpans += seriesValue(t, reg, "tailsift_sampler_budget_kept_spans_total", c)
		keptTraces += seriesValue(t, reg, "tailsift_sampler_budget_kept_traces_total", c)
		dropped += seriesValue(t, reg, "tailsift_sampler_budget_dropped_traces_total", c)
	}
	for _, n := range res.offeredTraces {
		offered += n
	}
	if keptSpans != kept {
		t.Errorf("kept spans exported %v, kept by the run %v", keptSpans, kept)
	}
	if keptTraces+dropped != offered {
		t.Errorf("kept %v + dropped %v traces exported, %v offered", keptTraces, dropped, offered)
	}
	if dropped == 0 {
		t.Error("a cap at a fifth of the load dropped nothing")
	}
	const want = `
# HELP tailsift_sampler_budget_spans_per_second This node's share of the cluster's cost cap, in kept spans per second.
# TYPE tailsift_sampler_budget_spans_per_second gauge
tailsift_sampler_budget_spans_per_second 1000
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tailsift_sampler_budget_spans_per_second"); err != nil {
		t.Error(err)
	}
	if p := seriesValue(t, reg, "tailsift_sampler_budget_keep_probability", "rest"); p <= 0 || p >= 1 {
		t.Errorf("keep probability of the rest: %v, want in (0, 1)", p)
	}

	current = testChain(t) // a reload to a policy without a cap
	const noCap = `
# HELP tailsift_sampler_budget_spans_per_second This node's share of the cluster's cost cap, in kept spans per second.
# TYPE tailsift_sampler_budget_spans_per_second gauge
tailsift_sampler_budget_spans_per_second 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(noCap), "tailsift_sampler_budget_spans_per_second"); err != nil {
		t.Errorf("without a cap: %v", err)
	}
	for _, c := range classNames {
		if p, k := seriesValue(t, reg, "tailsift_sampler_budget_keep_probability", c), seriesValue(t, reg, "tailsift_sampler_budget_kept_spans_total", c); p != 1 || k != 0 {
			t.Errorf("without a cap, class %s: keep probability %v, kept spans %v; want 1 and 0", c, p, k)
		}
	}
}

// seriesValue returns the value of the one series of name with class.
func seriesValue(t *testing.T, reg *prometheus.Registry, name, class string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == class {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no series %s{class=%q}", name, class)
	return 0
}
