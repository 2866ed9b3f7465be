package sampler

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestHeadRate(t *testing.T) {
	tests := []struct {
		ts          string
		rate        float64
		independent bool
	}{
		{"", 1, false},
		{"vendor=x", 1, false},
		{"ot=th:0", 1, false},
		{"ot=th:8", 2, false},               // threshold 2^55: p = 1/2
		{"ot=th:c", 4, false},               // p = 1/4
		{"ot=th:e6666666666666", 10, false}, // p ≈ 0.1
		{"a=1, ot=th:c;rv:0123456789abcd ,b=2", 4, true},
		{"ot=rv:0123456789abcd;th:8", 2, true},
		{"ot=th:C", 1, false},               // upper case is not allowed
		{"ot=th:123456789abcdef", 1, false}, // 15 digits
		{"ot=th:", 1, false},
		{"xot=th:8", 1, false},
	}
	for _, tc := range tests {
		t.Run(tc.ts, func(t *testing.T) {
			r, ind := HeadRate([]byte(tc.ts))
			if math.Abs(r-tc.rate) > 1e-6*tc.rate || ind != tc.independent {
				t.Fatalf("HeadRate(%q) = %v, %v; want %v, %v", tc.ts, r, ind, tc.rate, tc.independent)
			}
		})
	}
}

func TestHeadSamplingCombines(t *testing.T) {
	prob, _ := NewProbabilisticPolicy(0.1)
	h := HeadSampling{Inner: Chain{ErrorPolicy{}, prob}}
	id := idWithRandomness(maxRandomness - 1) // kept by any threshold
	tests := []struct {
		name  string
		spans []sp
		want  float64
	}{
		{"no tracestate", []sp{{name: "r"}}, 10},
		{"head 1/4, tail 1/10: nested, max", []sp{{name: "r", tracestate: "ot=th:c"}}, 10},
		{"head 1/32 above tail", []sp{{name: "r", tracestate: "ot=th:f8"}}, 32},
		{"error kept at 1: head rate", []sp{{name: "r", tracestate: "ot=th:c", status: 2}}, 4},
		{"explicit randomness: product", []sp{{name: "r", tracestate: "ot=th:c;rv:00000000000001"}}, 40},
		{"no root: first span with tracestate", []sp{{child: true}, {child: true, tracestate: "ot=th:8", status: 2}}, 2},
		{"root without tracestate wins over children", []sp{{name: "r", status: 2}, {child: true, tracestate: "ot=th:8"}}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := h.Decide(build(id, tc.spans...))
			if v.Decision != Keep || math.Abs(v.SampleRate-tc.want) > 1e-9*tc.want {
				t.Fatalf("got %v rate %v, want keep rate %v", v.Decision, v.SampleRate, tc.want)
			}
		})
	}
}

// TestHeadSamplingUnbiased simulates an SDK head-sampling at 1/4 (by the
// trace ID randomness, as OTel's consistent samplers do) before a tail
// probabilistic policy at 1/10 and at 1/2: SUM(sample_rate) estimates the
// traces the SDK saw, which a product of the rates would overcount.
func TestHeadSamplingUnbiased(t *testing.T) {
	const n = 400_000
	thHead := probThreshold(0.25)
	for _, tail := range []float64{0.1, 0.5} {
		prob, _ := NewProbabilisticPolicy(tail)
		h := HeadSampling{Inner: prob}
		rng := rand.New(rand.NewPCG(3, 4))
		tr := build(tid(1), sp{name: "r", tracestate: "ot=th:c"})
		est := 0.0
		for range n {
			r := rng.Uint64N(maxRandomness)
			if r < thHead {
				continue // not head-sampled: tailsift never sees it
			}
			tr.ID = idWithRandomness(r)
			if v := h.Decide(tr); v.Decision == Keep {
				est += v.SampleRate
			}
		}
		if dev := est/n - 1; math.Abs(dev) > 0.03 {
			t.Errorf("tail %v: SUM(sample_rate) = %.0f for %d traces (%.1f%%)", tail, est, n, dev*100)
		}
	}
}
