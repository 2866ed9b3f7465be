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
	// MaxErrorKeys bounds the keys (strata) tracked; traces of keys past
	// it are sampled by an independent draw. Default 10,000.
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
// Each class's share divided by its offered cost is its keep probability p
// for the next interval.
//
// Within a class, traces are sampled per stratum (root service + route, and
// for errors the status class), so that counts by those keys come out
// nearly exact rather than with the spread of independent coin flips. Each
// stratum accumulates credit, p per trace offered, and keeps a trace when
// its credit reaches the trace's own draw (a seeded hash of its ID), paying
// one credit: the number kept is within a couple of traces of the sum of
// the probabilities, yet which traces are kept stays random, so a periodic
// pattern in the traffic cannot alias with the sampling. A kept trace's
// sample rate is the sum of the inner sample rates of the traces its
// stratum was offered since its previous kept one, itself included: that is
// the count it stands for, so SUM(sample_rate) by any grouping coarser than
// the strata is off by at most the traces offered after each stratum's last
// kept trace (about 1/p each), whatever the probabilities did in between.
// Strata past MaxErrorKeys fall back to an independent draw with sample
// rate 1/p.
//
// When errors alone exceed the budget, error strata are given their
// probabilities by water-filling: each gets an equal share, strata offering
// less than the share are kept whole, and the first error trace of each in
// every KeyWindow is kept regardless, so every distinct error is seen even
// in a storm.
//
// A token bucket refilled at the node's rate is the backstop for what
// prediction misses (the first interval, a sudden burst): a trace it cannot
// pay for is dropped, and the next kept trace of its stratum stands for it.
// A class within its predicted share may run the bucket into a small debt;
// past its share, slow and other traces stop drawing earlier than errors
// (see floor), so a burst spends what is left on errors. The predicted
// probabilities aim slightly under the rate (98%), so the bucket rarely
// binds. The shares also reserve a little for slow and other traces during
// an error storm (Reserve), so they are still counted.
//
// Sampling by credit depends on the order traces are decided in, so a trace
// decided again after a crash may be decided differently; both outcomes
// leave the counts right to within a trace or two per stratum.
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
	fills     [maxFillShards]int64 // ns, the time each shard last refilled the bucket to
	tickStart int64                // ns, start of the current interval
	tickEnd   int64                // ns, when the next adjustment is due
	started   bool
	offered   [numClasses]float64 // cost offered this interval
	offeredN  [numClasses]float64 // traces offered this interval
	ewmaN     [numClasses]float64 // smoothed traces offered per second
	kept      [numClasses]float64 // cost kept this interval
	ewma      [numClasses]float64 // smoothed offered cost per second
	q         [numClasses]float64 // keep probability for the next interval
	share     [numClasses]float64 // cost per second each class is predicted to keep
	keys      map[uint64]*budgetKey
	stats     BudgetStats
}

// budgetKey is one stratum's accounting, guarded by Budget.mu.
type budgetKey struct {
	class      int
	cost       float64 // cost offered this interval
	ewma       float64 // smoothed offered cost per second
	p          float64 // keep probability (error keys; others use their class's)
	credit     float64 // keep probability accumulated, less one per trace kept
	owed       float64 // sample rates of the traces offered since the last kept
	lastWindow int64   // KeyWindow index of the last kept trace, -1: never
}

// BudgetStats counts what the cap did, for metrics and tests.
type BudgetStats struct {
	Offered     [numClasses]int64 // traces the inner policy kept
	Kept        [numClasses]int64 // of those, kept by the cap
	Forced      int64             // error traces kept as their key's first in a window
	BucketDrops [numClasses]int64 // drops by the token bucket (counted by the next kept trace of their stratum)
	KeptSpans   [numClasses]int64 // spans of the traces kept
	Rate        float64           // this node's share of the budget, spans (or bytes) per second
	Bytes       bool              // whether Rate is in bytes
	Probability [numClasses]float64
}

// NewBudget wraps inner with a cost cap reading time from clock (nil: the
// wall clock). The cap starts with this node holding the whole budget; call
// SetShare when the cluster's size is known.
//
// A node passes the sampler's completion clock, record time: the rate is
// then per second of the traffic, so a backlog read at ten times real time
// keeps what the same traffic would have kept live, rather than a tenth.
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
		keys:      make(map[uint64]*budgetKey),
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
	st := b.stats
	st.Rate = b.rate
	if !b.started {
		st.Rate = b.cluster / float64(b.nodes.Load())
	}
	st.Bytes = b.bytes
	st.Probability = b.q
	return st
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
	keyHash := stratumHash(t, class)
	u := budgetDraw(&t.ID)
	now := t.decisionTime(b.clock)

	b.mu.Lock()
	b.advance(now, t)
	b.offered[class] += cost
	b.offeredN[class]++
	b.stats.Offered[class]++
	key := b.keys[keyHash]
	if key == nil && len(b.keys) < b.maxKeys {
		key = &budgetKey{class: class, p: b.q[class], lastWindow: -1}
		b.keys[keyHash] = key
	}
	var want, forced bool
	p := b.q[class]
	if key != nil {
		if class == ClassError {
			p = key.p
			forced = key.lastWindow != now/b.keyWindow
		}
		key.cost += cost
		key.owed += v.SampleRate
		key.credit = min(key.credit+p, 2)
		want = forced || key.credit >= u
	} else {
		want = u < p
	}
	keep := false
	if want {
		if forced || b.tokens > b.floor(class, now) {
			keep = true
		} else {
			b.stats.BucketDrops[class]++
		}
	}
	rate := v.SampleRate / min(p, 1)
	if keep {
		b.tokens -= cost
		b.kept[class] += cost
		b.stats.Kept[class]++
		b.stats.KeptSpans[class] += int64(len(t.Spans))
		if forced {
			b.stats.Forced++
		}
		if key != nil {
			if key.credit >= u {
				key.credit--
			}
			rate, key.owed = key.owed, 0
			key.lastWindow = now / b.keyWindow
		}
	}
	b.mu.Unlock()

	if !keep {
		return Verdict{Decision: Drop, Reason: budgetDropReasons[class]}
	}
	v.SampleRate = rate
	return v
}

// stratumHash is the key a trace is sampled under: its class, root service
// and route, and for errors the status class too.
func stratumHash(t *Trace, class int) uint64 {
	var buf [160]byte
	k := append(buf[:0], byte(class), 0x1f)
	k = append(k, t.RootService()...)
	k = append(k, 0x1f)
	k = t.appendRoute(k)
	if class == ClassError {
		k = append(k, 0x1f)
		k = t.appendStatusClass(k)
	}
	return xxhash.Sum64(k)
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
// Slow and other traces stop at a quarter and a half of the bucket's depth,
// leaving the rest to errors: a burst, or a prediction that overshot while
// the load was ramping up, then spends what is left on errors. (A trace the
// bucket drops is still counted, by the next kept trace of its stratum.)
// Errors predicted to fit the budget whole, or still within their predicted
// share (with slack for sampling noise: 1.5 times, plus a tenth of the
// depth), may run the bucket into a debt of half its depth: a few large
// error traces arriving together are no reason to drop one. Past their
// share, errors draw down to zero. The debt bounds the overshoot over any
// window to 1.5 depths.
func (b *Budget) floor(class int, now int64) float64 {
	depth := b.rate * b.burst
	switch class {
	case ClassSlow:
		return depth / 4
	case ClassRest:
		return depth / 2
	}
	soFar := float64(now-b.tickStart) / 1e9
	if b.q[ClassError] >= 1 || b.kept[class] < 1.5*b.share[class]*soFar+depth/10 {
		return -depth / 2
	}
	return 0
}

// utilisation is the share of the rate the predicted probabilities aim for;
// the rest is slack so the backstop bucket (whose drops are not re-weighted)
// rarely binds.
const utilisation = 0.98

// maxFillShards bounds the shards refilling the bucket separately; shards
// past it share a slot.
const maxFillShards = 256

// advance refills the bucket up to now, as far as t's shard is concerned,
// and, at the end of each interval, recomputes the keep probabilities.
// Called with b.mu held.
//
// Each shard refills its share of the rate, up to its own decision time:
// the shards of a node decide a backlog each in time order but not in step,
// one may be seconds of record time ahead of another, and a bucket refilled
// to the leader's time would overflow while the laggards find it empty.
// The shards divide the traces by a hash of their ID, so each offers its
// share of the load.
func (b *Budget) advance(now int64, t *Trace) {
	slot, shards := 0, 1
	if t.shards > 0 {
		slot, shards = int(t.shard)%maxFillShards, min(int(t.shards), maxFillShards)
	}
	if !b.started {
		b.started = true
		b.rate = b.cluster / float64(b.nodes.Load())
		b.tokens = b.rate * b.burst
		for i := range b.fills {
			b.fills[i] = now
		}
		// The first adjustment comes early: until then nothing is
		// known of the load, every class has probability 1, and only
		// the bucket holds the cap.
		b.tickStart, b.tickEnd = now, now+int64(b.warmup)
		return
	}
	if last := b.fills[slot]; now > last {
		b.tokens = min(b.tokens+b.rate/float64(shards)*float64(now-last)/1e9, b.rate*b.burst)
		b.fills[slot] = now
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
	costs := make([]float64, 0, len(b.keys))
	window := now / b.keyWindow
	for h, k := range b.keys {
		k.ewma = smooth(k.ewma, k.cost/elapsed)
		k.cost = 0
		if k.ewma < 1e-3 && k.lastWindow < window-1 {
			// Idle for a window: forget it. What it owed (traces offered
			// after its last kept one) is at most about 1/p traces.
			delete(b.keys, h)
			continue
		}
		if k.class == ClassError {
			costs = append(costs, k.ewma)
		}
	}
	if b.q[ClassError] >= 1 {
		for _, k := range b.keys {
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
	for _, k := range b.keys {
		k.p = 1
		if k.class == ClassError && k.ewma > lambda {
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
