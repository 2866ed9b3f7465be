package sampler

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

func TestDynamicKeyFields(t *testing.T) {
	tr := build(tid(1), sp{name: "POST /cart", kind: 2, service: "checkout",
		attrs: []kv{{"http.request.method", "POST"}, {"http.route", "/cart"}, {"http.response.status_code", 503}, {"tenant", "acme"}},
		res:   []kv{{"region", "eu"}}})
	fields, err := parseKeyFields([]string{"service", "route", "status_class", "span_name", "kind", "attr:tenant", "resource:region"})
	if err != nil {
		t.Fatal(err)
	}
	got := string(appendKey(nil, tr, fields))
	want := "checkout\x1fPOST /cart\x1f5xx\x1fPOST /cart\x1fserver\x1facme\x1feu"
	if got != want {
		t.Fatalf("key %q, want %q", got, want)
	}
	noRoot := build(tid(1), sp{name: "c", child: true, service: "db", status: 2})
	if got := string(appendKey(nil, noRoot, fields[:3])); got != "db\x1f\x1ferror" {
		t.Fatalf("key without root %q", got)
	}
	if _, err := parseKeyFields([]string{"colour"}); err == nil {
		t.Fatal("unknown key field accepted")
	}
}

// TestDynamicAdapts offers one frequent key, a medium one and a rare one:
// after the first interval the rare key is kept whole, the frequent one
// hardest, the overall keep share is near the target, and SUM(sample_rate)
// estimates every key's count.
// TestDynamicAdapts runs two minutes of traffic with the policy's clock
// advancing, and again with it standing still while the traces carry their
// completion time (Trace.Complete), as a sampler gives them when a backlog
// is read faster than real time: the intervals must pass either way.
func TestDynamicAdapts(t *testing.T) {
	t.Run("clock", func(t *testing.T) { dynamicAdapts(t, false) })
	t.Run("completion time", func(t *testing.T) { dynamicAdapts(t, true) })
}

func dynamicAdapts(t *testing.T, byCompletion bool) {
	clk := newFakeClock()
	var pclk Clock = clk
	if byCompletion {
		pclk = newFakeClock()
	}
	p, err := NewDynamic(DynamicConfig{Key: []string{"service"}, TargetRate: 0.05, Interval: 10 * time.Second}, pclk)
	if err != nil {
		t.Fatal(err)
	}
	perSec := map[string]int{"big": 1000, "mid": 30, "rare": 1}
	traces := map[string]*Trace{}
	for svc := range perSec {
		traces[svc] = build(tid(1), sp{name: "r", service: svc})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	type acc struct{ n, kept, est float64 }
	stats := map[string]*acc{}
	for sec := range 120 {
		for svc, n := range perSec {
			for range n {
				tr := traces[svc]
				tr.ID = idWithRandomness(rng.Uint64N(maxRandomness))
				if byCompletion {
					tr.Complete = clk.Now()
				}
				v := p.Decide(tr)
				if sec < 10 {
					continue // first interval: no rates yet
				}
				a := stats[svc]
				if a == nil {
					a = &acc{}
					stats[svc] = a
				}
				a.n++
				if v.Decision == Keep {
					a.kept++
					a.est += v.SampleRate
				}
			}
		}
		clk.Advance(time.Second)
	}
	total, kept := 0.0, 0.0
	for svc, a := range stats {
		total += a.n
		kept += a.kept
		t.Logf("%s: kept %.0f of %.0f (%.1f%%), estimate %.0f", svc, a.kept, a.n, 100*a.kept/a.n, a.est)
		if dev := a.est/a.n - 1; math.Abs(dev) > 0.1 {
			t.Errorf("%s: SUM(sample_rate) %.0f for %.0f traces", svc, a.est, a.n)
		}
	}
	if stats["rare"].kept != stats["rare"].n {
		t.Errorf("rare key: kept %.0f of %.0f", stats["rare"].kept, stats["rare"].n)
	}
	if big, mid := stats["big"].kept/stats["big"].n, stats["mid"].kept/stats["mid"].n; !(big < mid) {
		t.Errorf("frequent key kept at %.3f, medium at %.3f: frequent should be sampled harder", big, mid)
	}
	if share := kept / total; math.Abs(share-0.05) > 0.01 {
		t.Errorf("kept %.3f overall, target 0.05", share)
	}
}

func TestDynamicNewKeysAndLimits(t *testing.T) {
	clk := newFakeClock()
	p, err := NewDynamic(DynamicConfig{Key: []string{"service"}, TargetRate: 0.01, MaxKeys: 64, NewKeyTraces: 3}, clk)
	if err != nil {
		t.Fatal(err)
	}
	// A new key's first traces are kept whole, whatever their randomness.
	tr := build(idWithRandomness(0), sp{name: "r", service: "new"})
	for i := range 3 {
		checkVerdict(t, p.Decide(tr), Keep, "dynamic")
		_ = i
	}
	if v := p.Decide(tr); v.Decision != Drop {
		t.Fatalf("4th trace of a new key with randomness 0: %v", v.Decision)
	}
	// Past MaxKeys, keys fall back to the target rate without growing memory.
	for i := range 10_000 {
		p.Decide(build(idWithRandomness(0), sp{name: "r", service: fmt.Sprint("k", i)}))
	}
	n := 0
	for i := range p.stripes {
		n += len(p.stripes[i].keys)
	}
	if n > 64 {
		t.Fatalf("tracking %d keys, max 64", n)
	}
	for _, cfg := range []DynamicConfig{{TargetRate: 0.1}, {Key: []string{"service"}}, {Key: []string{"service"}, TargetRate: 2}} {
		if _, err := NewDynamic(cfg, clk); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}

// TestDynamicConcurrent runs Decide from several goroutines across interval
// rolls; run with -race.
func TestDynamicConcurrent(t *testing.T) {
	clk := newFakeClock()
	p, _ := NewDynamic(DynamicConfig{Key: []string{"service", "route"}, TargetRate: 0.1, Interval: time.Second}, clk)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			trs := []*Trace{
				build(tid(1), sp{name: "GET /a", service: fmt.Sprint("s", g)}),
				build(tid(2), sp{name: "GET /b", service: "shared"}),
			}
			for i := range 20_000 {
				tr := trs[i%2]
				v := p.Decide(&Trace{ID: idWithRandomness(rng.Uint64N(maxRandomness)), Spans: tr.Spans, root: tr.root})
				if v.Decision == Keep && v.SampleRate < 1 {
					t.Errorf("rate %v", v.SampleRate)
				}
				if i%1000 == 0 {
					clk.Advance(300 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
}

func TestWaterLevel(t *testing.T) {
	counts := []float64{100_000, 1000, 10}
	l := waterLevel(counts, 0.05)
	kept := 0.0
	for _, c := range counts {
		kept += c * keepShare(c, l)
	}
	if want := 0.05 * 101_010; math.Abs(kept-want) > 1 {
		t.Fatalf("kept %.1f, want %.1f", kept, want)
	}
	if keepShare(10, l) != 1 || keepShare(1000, l) != 1 || keepShare(100_000, l) >= 0.05 {
		t.Fatalf("shares %v %v %v", keepShare(10, l), keepShare(1000, l), keepShare(100_000, l))
	}
	if !math.IsInf(waterLevel(counts, 1), 1) {
		t.Fatal("target 1 must keep everything")
	}
}
