package sampler_test

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tailsift/tailsift/bench/gen"
	"github.com/tailsift/tailsift/router"
	"github.com/tailsift/tailsift/sampler"
)

// simClock is simulated time, shared by the input clock, the sampler and
// the budget.
type simClock struct{ ns atomic.Int64 }

func (c *simClock) Now() time.Time { return time.Unix(0, c.ns.Load()) }

// segment is a stretch of generated traffic at a steady trace rate.
type segment struct {
	traces     int
	errorShare float64
}

type capResult struct {
	traces, spans int
	byService     map[string]int // true trace counts
	byRoute       map[string]int
	errorKeys     map[string]int
	errorTraces   map[[16]byte]bool
	offered       float64 // spans per simulated second
	windows       []int   // kept spans per 10 s window
	keptErrors    map[[16]byte]bool
	estService    map[string]float64 // SUM(sample_rate) over kept roots
	estRoute      map[string]float64
	keptErrorKeys map[string]bool
	stats         sampler.BudgetStats
}

// tracesPerSecond is the rate at which runCapped's traffic offers traces.
const tracesPerSecond = 1000

// runCapped drives generated traffic through the router's scanner and a
// sampler under a cost cap at capShare of the offered span rate, in
// simulated time (100 s at 1,000 traces a second), and collects what was
// kept. Traces end within seconds, so decisions follow arrivals closely, as
// in a node.
func runCapped(t *testing.T, capShare float64, segs ...segment) capResult {
	t.Helper()
	start := time.Unix(1_800_000_000, 0)
	type msg struct {
		at    time.Time
		value []byte
	}
	var msgs []msg
	res := capResult{byService: map[string]int{}, byRoute: map[string]int{}, errorKeys: map[string]int{}, errorTraces: map[[16]byte]bool{},
		keptErrors: map[[16]byte]bool{}, estService: map[string]float64{}, estRoute: map[string]float64{}, keptErrorKeys: map[string]bool{}}
	segStart := start
	for i, sg := range segs {
		var values [][]byte
		truth, err := gen.Generate(gen.Config{Seed: int64(42 + i), Traces: sg.traces, ErrorShare: sg.errorShare, Start: segStart},
			func(b []byte) error { values = append(values, b); return nil })
		if err != nil {
			t.Fatal(err)
		}
		dur := time.Duration(sg.traces) * time.Second / tracesPerSecond
		for j, v := range values {
			msgs = append(msgs, msg{segStart.Add(dur * time.Duration(j) / time.Duration(len(values))), v})
		}
		segStart = segStart.Add(dur)
		res.traces += truth.Traces
		res.spans += truth.Spans
		for k, n := range truth.ByService {
			res.byService[k] += n
		}
		for k, n := range truth.ByRoute {
			res.byRoute[k] += n
		}
		for k, n := range truth.ErrorKeys {
			res.errorKeys[k] += n
		}
		for id := range truth.ErrorTraces {
			res.errorTraces[id] = true
		}
	}
	simSeconds := segStart.Sub(start).Seconds()
	res.offered = float64(res.spans) / simSeconds
	res.windows = make([]int, int(simSeconds)/10+4)

	clock := &simClock{}
	clock.ns.Store(start.UnixNano())
	doc := fmt.Sprintf(`
policies:
  - type: error
  - type: latency
    threshold: 2s
  - type: probabilistic
    rate: 1
budget:
  spans_per_second: %f
`, capShare*res.offered)
	pol, err := sampler.ParsePolicies([]byte(doc), sampler.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	// The shards' own ticker barely matters: the loop below decides every
	// 50 ms of simulated time with Expire.
	cfg := sampler.Config{Shards: 2, QuietPeriod: time.Second, MaxWait: 10 * time.Second, TickInterval: time.Second,
		InputClock: clock, DecisionCacheSize: 1 << 20}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	out := make(chan *sampler.Kept, 1<<16)
	s := sampler.New(cfg, pol, out, nil, clock)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)

	collected := make(chan struct{})
	go func() {
		defer close(collected)
		for k := range out {
			w := int(k.DecidedAt.Sub(start) / (10 * time.Second))
			res.windows[min(w, len(res.windows)-1)] += len(k.Spans)
			if k.HasError {
				res.keptErrors[k.ID] = true
			}
			for i := range k.Spans {
				if !k.Spans[i].Root() {
					continue
				}
				route, _ := k.Spans[i].Attr("http.route")
				key := k.RootService + " " + string(route.Str)
				res.estService[k.RootService] += k.SampleRate
				res.estRoute[key] += k.SampleRate
				if k.HasError {
					res.keptErrorKeys[key] = true
				}
			}
			k.Release()
		}
	}()
	sc, _ := router.NewScanner("")
	const tick = 50 * time.Millisecond
	last := start
	for _, m := range msgs {
		// Decide what is complete every 50 ms of simulated time, as the
		// shards' ticker would in real time.
		for m.at.Sub(last) >= tick {
			last = last.Add(tick)
			clock.ns.Store(last.UnixNano())
			if err := s.Expire(ctx); err != nil {
				t.Fatal(err)
			}
		}
		clock.ns.Store(m.at.UnixNano())
		src := &sampler.Pending{TS: m.at.UnixNano()}
		items, err := sc.Scan(m.value, src)
		if err != nil {
			t.Fatal(err)
		}
		src.Add(len(items))
		if err := s.Add(ctx, append([]sampler.Item(nil), items...)); err != nil {
			t.Fatal(err)
		}
	}
	// Let every trace complete in simulated time.
	for range 30 * time.Second / tick {
		clock.ns.Add(int64(tick))
		if err := s.Expire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-collected
	res.stats = pol.(*sampler.Budget).Stats()
	return res
}

// checkCap checks the kept span rate in every full 10 s window after the
// first (warm-up) against the cap.
//
// Windows listed in catchUp may fall short of the cap by up to 15%: the one
// after a burst of errors ends, while the budget brings the other traces'
// probabilities back up from where the burst had pushed them (it keeps
// 93-94% of the cap there, varying by a point with the order in which
// traces due at the same moment are decided). Keeping less than the cap
// is allowed; keeping more never is.
func checkCap(t *testing.T, res capResult, capRate float64, catchUp ...int) {
	t.Helper()
	full := int(float64(res.spans)/res.offered) / 10
	for w := 1; w < full; w++ {
		rate := float64(res.windows[w]) / 10
		under := 0.10
		if slices.Contains(catchUp, w) {
			under = 0.15
		}
		if rate > capRate*1.10 || rate < capRate*(1-under) {
			t.Errorf("window %d: kept %.0f spans/s, cap %.0f (+10%%, -%.0f%%)", w, rate, capRate, 100*under)
		}
	}
	t.Logf("offered %.0f spans/s, cap %.0f; kept spans per 10 s window %v; budget %+v", res.offered, capRate, res.windows[:full+1], res.stats)
}

// checkEstimates checks SUM(sample_rate) over kept roots against the true
// trace counts, by service and by (service, route), and that every key was
// kept at least once.
func checkEstimates(t *testing.T, res capResult, tolerance float64) {
	t.Helper()
	for _, k := range slices.Sorted(maps.Keys(res.byService)) {
		n := res.byService[k]
		if est := res.estService[k]; math.Abs(est-float64(n))/float64(n) > tolerance {
			t.Errorf("service %s: SUM(sample_rate) %.0f, true %d traces (±%.0f%%)", k, est, n, 100*tolerance)
		}
	}
	worst := 0.0
	for _, k := range slices.Sorted(maps.Keys(res.byRoute)) {
		n := res.byRoute[k]
		est, ok := res.estRoute[k]
		if !ok {
			t.Errorf("route %q (%d traces) never kept", k, n)
			continue
		}
		dev := math.Abs(est-float64(n)) / float64(n)
		worst = max(worst, dev)
		if dev > tolerance {
			t.Errorf("route %q: SUM(sample_rate) %.0f, true %d traces (±%.0f%%)", k, est, n, 100*tolerance)
		}
	}
	t.Logf("%d services, %d routes; worst route estimate off by %.2f%%", len(res.byService), len(res.byRoute), 100*worst)
}

// TestCostCapWithGeneratedTraffic: 100,000 generated traces under a cap at
// 20% of the offered span rate. Every error trace is kept (errors fit), the
// kept rate holds the cap in every 10 s window, and SUM(sample_rate) counts
// traces by service and route within 5%.
func TestCostCapWithGeneratedTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 traces")
	}
	res := runCapped(t, 0.2, segment{traces: 100_000})
	checkCap(t, res, 0.2*res.offered)
	lost := 0
	for id := range res.errorTraces {
		if !res.keptErrors[id] {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d error traces dropped while errors fit the budget", lost, len(res.errorTraces))
	}
	checkEstimates(t, res, 0.05)
}

// TestCostCapErrorBurst: the same traffic with ten times the errors for the
// middle 40 seconds. Errors then exceed the budget on their own: the cap
// still holds, every distinct error key is still kept, and the counts stay
// right because slow and other traces keep a reserve.
func TestCostCapErrorBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 traces")
	}
	res := runCapped(t, 0.2, segment{traces: 30_000}, segment{traces: 40_000, errorShare: 0.2}, segment{traces: 30_000})
	// The cap is set from the steady rate: the burst's error traces are
	// larger, so the offered rate rises, and the cap must not.
	capRate := 0.2 * res.offered
	checkCap(t, res, capRate, (30_000+40_000)/tracesPerSecond/10) // the window after the burst
	for k, n := range res.errorKeys {
		if !res.keptErrorKeys[k] {
			t.Errorf("error key %q (%d error traces) never kept", k, n)
		}
	}
	checkEstimates(t, res, 0.05)
}
