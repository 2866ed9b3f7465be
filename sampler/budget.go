package sampler

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
)

// BudgetConfig configures NewBudget. Exactly one of SpansPerSecond and
// BytesPerSecond is set.
type BudgetConfig struct {
	// SpansPerSecond is the cluster's budget of kept spans per second.
	SpansPerSecond float64
	// BytesPerSecond is the cluster's budget of kept encoded span bytes per
	// second.
	BytesPerSecond float64
	// AdjustInterval is how often the per-class keep probabilities are
	// recomputed from the offered load. Default 1s.
	AdjustInterval time.Duration
	// Burst is the depth of the backstop token bucket, as time at this
	// node's rate. It bounds the overshoot over any window to 1.5 Bursts'
	// worth of spans: 500ms (the default) keeps a 10s window within +7.5%.
	Burst time.Duration
	// KeyWindow: every distinct error key (root service, route, status
	// class) has a trace kept at least once per window, whatever the load.
	// Default 10s.
	KeyWindow time.Duration
	// MaxErrorKeys bounds the error keys tracked. Default 10,000.
	MaxErrorKeys int
	// Reserve is the share of the rate set aside for each of the slow and
	// the other traces, as far as they offer that much, even when errors
	// alone would take it all. A class given nothing has probability 0,
	// and no sample rate can make up for traces that could never be kept:
	// the reserve is what keeps SUM(sample_rate) an estimate of every
	// trace during an error storm. Default 0.05; StrictPriority sets it
	// to 0.
	Reserve float64
	// StrictPriority gives lower classes nothing while errors exceed the
	// budget, at the price of counts of non-error traces during storms.
	StrictPriority bool
}

// Priority classes of the cost cap, in the order the budget serves them.
const (
	ClassError = iota // kept by a policy whose reason starts with "error", or any span has status ERROR
	ClassSlow         // kept by a policy whose reason starts with "latency"
	ClassRest         // everything else that was kept
	numClasses
)

var classNames = [numClasses]string{"error", "slow", "rest"}

// Reasons of traces the cost cap drops.
var budgetDropReasons = [numClasses]string{"budget/error", "budget/slow", "budget/rest"}

// Budget caps what the policies below it keep to a budget of spans (or
// bytes) per second, this node's share of a cluster-wide budget.
//
// Decisions come one trace at a time, so the cap cannot pick the best subset
// of a second's traces after the fact. Instead it predicts: every
// AdjustInterval it measures the cost the inner policy offered in each
// priority class (errors, slow, the rest), smooths it (exponentially, half
// weight to the latest interval), and hands out the node's rate in priority
// order: errors first, then slow traces, then the rest get what is left.
// Each class's share divided by its offered cost is its keep probability for
// the next interval. A kept trace's sample rate is multiplied by 1/q, so
// SUM(sample_rate) still estimates the true counts.
//
// When errors alone exceed the budget, errors are sampled by key (root
// service + route + status class) by water-filling: each key gets an equal
// share, keys offering less than the share are kept whole, and the first
// error trace of each key in every KeyWindow is kept regardless, so every
// distinct error is seen even in a storm. That trace's probability was 1 at
// the moment it was decided, which keeps the estimate unbiased.
//
// A token bucket refilled at the node's rate is the backstop for what
// prediction misses (the first interval, a sudden burst): a trace it cannot
// pay for is dropped. A class within its predicted share may run the bucket
// into a small debt; past its share, slow and other traces stop drawing
// earlier than errors (see floor), so a burst spends what is left on errors.
// Drops by the bucket are not re-weighted (their probability was not known
// in advance), which is why the predicted probabilities aim slightly under
// the rate (98%): the bucket then rarely binds. The shares also reserve a
// little for slow and other traces during an error storm (Reserve), since a
// class given probability 0 cannot be counted by any sample rate.
//
// The draw is a hash of the trace ID under a seed of its own, independent of
// the randomness the inner policies test, so the cap's factor multiplies
// theirs. Put Budget outermost, outside HeadSampling.
//
// Concurrency: Decide is called from every shard. The inner policy and the
// key hashing run outside the lock; one mutex guards the accounting, held
// for a few map and float operations per kept trace.
type Budget struct {
	inner   Policy
	clock   Clock
	bytes   bool
	cluster float64
	nodes   atomic.Int64

	interval  time.Duration
	burst     float64 // seconds
	keyWindow int64   // ns
	maxKeys   int
	reserve   float64
	warmup    time.Duration

	mu        sync.Mutex
	rate      float64 // this node's cost per second
	tokens    float64
	lastFill  int64 // ns
	tickStart int64 // ns, start of the current interval
	tickEnd   int64 // ns, when the next adjustment is due
	started   bool
	offered   [numClasses]float64 // cost offered this interval
	offeredN  [numClasses]float64 // traces offered this interval
	ewmaN     [numClasses]float64 // smoothed traces offered per second
	kept      [numClasses]float64 // cost kept this interval
	ewma      [numClasses]float64 // smoothed offered cost per second
	q         [numClasses]float64 // keep probability for the next interval
	share     [numClasses]float64 // cost per second each class is predicted to keep
	errKeys   map[uint64]*budgetKey
	stats     BudgetStats
}

// budgetKey is one error key's accounting, guarded by Budget.mu.
type budgetKey struct {
	cost       float64 // cost offered this interval
	ewma       float64 // smoothed offered cost per second
	p          float64 // keep probability
	lastWindow int64   // KeyWindow index of the last kept trace, -1: never
}

// BudgetStats counts what the cap did, for metrics and tests.
type BudgetStats struct {
	Offered     [numClasses]int64 // traces the inner policy kept
	Kept        [numClasses]int64 // of those, kept by the cap
	Forced      int64             // error traces kept as their key's first in a window
	BucketDrops [numClasses]int64 // drops by the token bucket (not re-weighted)
}

// NewBudget wraps inner with a cost cap. The cap starts with this node
// holding the whole budget; call SetShare when the cluster's size is known.
func NewBudget(cfg BudgetConfig, inner Policy, clock Clock) (*Budget, error) {
	var errs []string
	if (cfg.SpansPerSecond > 0) == (cfg.BytesPerSecond > 0) {
		errs = append(errs, "budget: set exactly one of spans_per_second and bytes_per_second, positive")
	}
	if cfg.SpansPerSecond < 0 || cfg.BytesPerSecond < 0 {
		errs = append(errs, "budget: rates must not be negative")
	}
	if cfg.AdjustInterval == 0 {
		cfg.AdjustInterval = time.Second
	}
	if cfg.Burst == 0 {
		cfg.Burst = 500 * time.Millisecond
	}
	if cfg.KeyWindow == 0 {
		cfg.KeyWindow = 10 * time.Second
	}
	if cfg.MaxErrorKeys == 0 {
		cfg.MaxErrorKeys = 10_000
	}
	if cfg.Reserve == 0 && !cfg.StrictPriority {
		cfg.Reserve = 0.05
	}
	if cfg.StrictPriority {
		cfg.Reserve = 0
	}
	if cfg.Reserve < 0 || cfg.Reserve > 0.3 {
		errs = append(errs, fmt.Sprintf("budget.reserve: must be in [0, 0.3], got %v", cfg.Reserve))
	}
	if cfg.AdjustInterval < 0 || cfg.Burst < 0 || cfg.KeyWindow < 0 || cfg.MaxErrorKeys < 0 {
		errs = append(errs, "budget: adjust_interval, burst, key_window and max_error_keys must be positive")
	}
	if inner == nil {
		errs = append(errs, "budget: needs a policy to cap")
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	if clock == nil {
		clock = SystemClock{}
	}
	b := &Budget{
		inner:     inner,
		clock:     clock,
		bytes:     cfg.BytesPerSecond > 0,
		cluster:   max(cfg.SpansPerSecond, cfg.BytesPerSecond),
		interval:  cfg.AdjustInterval,
		burst:     cfg.Burst.Seconds(),
		keyWindow: int64(cfg.KeyWindow),
		maxKeys:   cfg.MaxErrorKeys,
		reserve:   cfg.Reserve,
		warmup:    min(cfg.AdjustInterval, 100*time.Millisecond),
		errKeys:   make(map[uint64]*budgetKey),
	}
	b.nodes.Store(1)
	b.q = [numClasses]float64{1, 1, 1}
	return b, nil
}

// SetShare sets how many nodes share the cluster budget; this node's rate
// becomes budget/n from the next adjustment. Safe to call at any time, e.g.
// on every membership change.
func (b *Budget) SetShare(n int) {
	if n < 1 {
		n = 1
	}
	b.nodes.Store(int64(n))
}

// Stats returns a copy of the counters.
func (b *Budget) Stats() BudgetStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// Name implements Policy.
func (b *Budget) Name() string { return "budget" }

// budgetSeed separates the cap's draw from the trace ID randomness that
// the sampling policies use, and from the shard hash.
var budgetSeed = [8]byte{'b', 'u', 'd', 'g', 'e', 't', 0, 1}

// Decide implements Policy.
func (b *Budget) Decide(t *Trace) Verdict {
	v := b.inner.Decide(t)
	if v.Decision != Keep {
		return v
	}
	cost := float64(len(t.Spans))
	if b.bytes {
		cost = float64(t.Bytes)
	}
	class := classify(t, v.Reason)
	var keyHash uint64
	if class == ClassError {
		var buf [160]byte
		k := append(buf[:0], t.RootService()...)
		k = append(k, 0x1f)
		k = t.appendRoute(k)
		k = append(k, 0x1f)
		k = t.appendStatusClass(k)
		keyHash = xxhash.Sum64(k)
	}
	u := budgetDraw(&t.ID)
	now := b.clock.Now().UnixNano()

	b.mu.Lock()
	b.advance(now)
	b.offered[class] += cost
	b.offeredN[class]++
	b.stats.Offered[class]++
	p := b.q[class]
	forced := false
	var key *budgetKey
	if class == ClassError {
		key = b.errKeys[keyHash]
		if key == nil && len(b.errKeys) < b.maxKeys {
			key = &budgetKey{p: b.q[ClassError], lastWindow: -1}
			b.errKeys[keyHash] = key
		}
		if key != nil {
			key.cost += cost
			p = key.p
			forced = key.lastWindow != now/b.keyWindow
		}
	}
	keep := forced
	if !keep && u < p {
		if b.tokens > b.floor(class, now) {
			keep = true
		} else {
			b.stats.BucketDrops[class]++
		}
	}
	if keep {
		b.tokens -= cost
		b.kept[class] += cost
		b.stats.Kept[class]++
		if key != nil {
			key.lastWindow = now / b.keyWindow
		}
		if forced {
			b.stats.Forced++
			p = 1
		}
	}
	b.mu.Unlock()

	if !keep {
		return Verdict{Decision: Drop, Reason: budgetDropReasons[class]}
	}
	v.SampleRate /= min(p, 1)
	return v
}

// classify puts a kept trace in its priority class.
func classify(t *Trace, reason string) int {
	switch {
	case t.HasError() || strings.HasPrefix(reason, "error"):
		return ClassError
	case strings.HasPrefix(reason, "latency"):
		return ClassSlow
	}
	return ClassRest
}

// floor is the token level below which class may no longer draw.
//
// A class still within the share predicted for it this interval (with
// slack for sampling noise: 1.5 times, plus a tenth of the depth) may run the
// bucket into debt, down to minus half its depth: its probability was set
// for that share, and dropping it now would bias its counts, most of all for
// a class sampled at 1% where each drop loses a weight of 100. Past its
// share (prediction was wrong) errors draw down to zero, and slow and other
// traces stop at a quarter and a half of the depth, leaving the rest to
// errors. The debt bounds the overshoot over any window to 1.5 depths.
func (b *Budget) floor(class int, now int64) float64 {
	depth := b.rate * b.burst
	soFar := float64(now-b.tickStart) / 1e9
	if b.kept[class] < 1.5*b.share[class]*soFar+depth/10 {
		return -depth / 2
	}
	switch class {
	case ClassSlow:
		return depth / 4
	case ClassRest:
		return depth / 2
	}
	return 0
}

// utilisation is the share of the rate the predicted probabilities aim for;
// the rest is slack so the backstop bucket (whose drops are not re-weighted)
// rarely binds.
const utilisation = 0.98

// advance refills the bucket up to now and, at the end of each interval,
// recomputes the keep probabilities. Called with b.mu held.
func (b *Budget) advance(now int64) {
	if !b.started {
		b.started = true
		b.rate = b.cluster / float64(b.nodes.Load())
		b.tokens = b.rate * b.burst
		b.lastFill = now
		// The first adjustment comes early: until then nothing is
		// known of the load, every class has probability 1, and only
		// the bucket holds the cap.
		b.tickStart, b.tickEnd = now, now+int64(b.warmup)
		return
	}
	if now > b.lastFill {
		b.tokens = min(b.tokens+b.rate*float64(now-b.lastFill)/1e9, b.rate*b.burst)
		b.lastFill = now
	}
	if now < b.tickEnd && !b.shifted(now) {
		return
	}
	// Intervals with no traffic at all still count: offered is 0 for them.
	elapsed := float64(now-b.tickStart) / 1e9
	b.tickStart, b.tickEnd = now, now+int64(b.interval)
	b.rate = b.cluster / float64(b.nodes.Load())

	for c := range numClasses {
		b.ewma[c] = smooth(b.ewma[c], b.offered[c]/elapsed)
		b.ewmaN[c] = smooth(b.ewmaN[c], b.offeredN[c]/elapsed)
		b.offeredN[c] = 0
		b.offered[c], b.kept[c] = 0, 0
	}
	target := b.rate * utilisation
	share := &b.share
	*share = [numClasses]float64{}
	left := target
	for c := ClassSlow; c < numClasses; c++ {
		share[c] = min(b.ewma[c], b.reserve*target)
		left -= share[c]
	}
	for c := range numClasses {
		extra := max(0, min(b.ewma[c]-share[c], left))
		share[c] += extra
		left -= extra
		b.q[c] = 1
		if b.ewma[c] > 0 {
			b.q[c] = share[c] / b.ewma[c]
		}
	}
	b.adjustErrorKeys(elapsed, now)
}

// shifted reports whether the load has changed so much since the interval
// began that the probabilities should be recomputed now rather than at its
// end: a class offering more than twice or under 40% of its prediction,
// measured over at least a fifth of the interval and 50 of its traces (or
// 50 expected), so that noise does not trigger it. Without it, an error
// storm that ends mid-interval would leave the other classes starved, and
// the budget unused, for up to an interval.
func (b *Budget) shifted(now int64) bool {
	soFar := now - b.tickStart
	if soFar < int64(b.interval)/5 {
		return false
	}
	sec := float64(soFar) / 1e9
	for c := range numClasses {
		r := b.offered[c] / sec
		switch {
		case r > 2*b.ewma[c] && b.offeredN[c] >= 50:
			return true
		case r < 0.4*b.ewma[c] && b.ewmaN[c]*sec >= 50:
			return true
		}
	}
	return false
}

// smooth folds the latest interval's rate r into the average: half weight
// to the latest, except that a change of more than a quarter is followed at
// once: a burst is then throttled by prediction rather than by the bucket
// (whose drops are not re-weighted), and the budget an ended burst held is
// handed back within one interval. Ordinary noise is averaged both ways,
// which keeps the average unbiased under steady load.
func smooth(avg, r float64) float64 {
	if r > 1.25*avg || r < 0.8*avg {
		return r
	}
	return 0.5*avg + 0.5*r
}

// adjustErrorKeys water-fills the errors' share over the error keys: λ such
// that Σ min(c_k, λ) = q_error·Σ c_k, and p_k = min(1, λ/c_k).
func (b *Budget) adjustErrorKeys(elapsed float64, now int64) {
	costs := make([]float64, 0, len(b.errKeys))
	window := now / b.keyWindow
	for h, k := range b.errKeys {
		k.ewma = smooth(k.ewma, k.cost/elapsed)
		k.cost = 0
		if k.ewma < 1e-3 && k.lastWindow < window-1 {
			delete(b.errKeys, h)
			continue
		}
		costs = append(costs, k.ewma)
	}
	if b.q[ClassError] >= 1 {
		for _, k := range b.errKeys {
			k.p = 1
		}
		return
	}
	// The keys' averages need not add up to the class's (each is smoothed
	// on its own), so fill the class's keep ratio of their sum.
	sum := 0.0
	for _, c := range costs {
		sum += c
	}
	lambda := fillLevel(costs, b.q[ClassError]*sum)
	for _, k := range b.errKeys {
		k.p = 1
		if k.ewma > lambda {
			k.p = lambda / k.ewma
		}
	}
}

// fillLevel returns λ with Σ min(c_k, λ) = share, or +Inf-like (the largest
// cost) when everything fits.
func fillLevel(costs []float64, share float64) float64 {
	total, hi := 0.0, 0.0
	for _, c := range costs {
		total += c
		hi = max(hi, c)
	}
	if total <= share {
		return hi
	}
	lo := 0.0
	for range 50 {
		mid := (lo + hi) / 2
		s := 0.0
		for _, c := range costs {
			s += min(c, mid)
		}
		if s < share {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}

// budgetDraw is the cap's uniform draw in [0, 1) for a trace: a seeded hash
// of its ID, so the same trace gets the same draw on every node and replay.
func budgetDraw(id *TraceID) float64 {
	var in [24]byte
	copy(in[:], id[:])
	copy(in[16:], budgetSeed[:])
	return float64(xxhash.Sum64(in[:])>>11) / (1 << 53)
}

// ClassName names a priority class for logs and metrics.
func ClassName(c int) string { return classNames[c] }

var _ Policy = (*Budget)(nil)
