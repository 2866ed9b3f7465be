package sampler

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestStartAtZero: every reason the default policy decides by is exported
// at zero before the first decision.
func TestStartAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.StartAtZero(DefaultPolicy())
	var got []string
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tailsift_sampler_traces_decided_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			got = append(got, s.GetLabel()[0].GetValue()+" "+s.GetLabel()[1].GetValue())
		}
	}
	slices.Sort(got)
	want := []string{"drop no-policy", "drop probabilistic", "keep error", "keep latency>=2s", "keep probabilistic/5%"}
	if !slices.Equal(got, want) {
		t.Errorf("decided series at start: %v, want %v", got, want)
	}
	if n := testutil.CollectAndCount(m.completed); n != 5 {
		t.Errorf("%d completion causes at start, want 5", n)
	}
}
