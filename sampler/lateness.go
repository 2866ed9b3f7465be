package sampler

import (
	"encoding/binary"
	"log/slog"
	"math/bits"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a late span would have changed a decision to drop its trace, as
// counted in tailsift_sampler_late_decision_changing_spans_total.
const (
	lateError = "error" // the span has status ERROR
	lateSlow  = "slow"  // a latency policy keeps the span on its own
	lateRule  = "rule"  // a rules policy keeps the span on its own
)

var lateReasons = [...]string{lateError, lateSlow, lateRule}

// adviceEvery bounds how often a node logs a decision-changing late span:
// the log names the lateness and the setting to raise, and one line a
// minute says that as well as a thousand would.
const adviceEvery = time.Minute

// lateMetrics are the shared half of the lateness accounting: the
// histogram, the counter by reason, and the throttle of the advice log.
type lateMetrics struct {
	lateness waitHistogram
	changing *prometheus.CounterVec

	mu      sync.Mutex
	advised time.Time     // wall time of the last advice logged
	worst   time.Duration // the greatest lateness not yet in advice
	unknown int           // decision-changing spans of unknown lateness not yet in advice
}

func newLateMetrics() *lateMetrics {
	m := &lateMetrics{
		lateness: newWaitHistogram("tailsift_sampler_span_lateness_seconds",
			"How long after its trace was decided a late span arrived, in record time. Spans whose trace's decision time was already forgotten are not observed.",
			[]float64{0.1, 0.5, 1, 2, 3, 5, 7, 10, 15, 20, 30, 60}),
		changing: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailsift_sampler_late_decision_changing_spans_total",
			Help: "Late spans of dropped traces that would have made the trace kept had they arrived in time, by why (error, slow, rule)."},
			[]string{"reason"}),
	}
	for _, r := range lateReasons {
		m.changing.WithLabelValues(r) // exported at zero, so an alert on it has data from start
	}
	return m
}

func (m *lateMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{&m.lateness, m.changing}
}

// advise notes a decision-changing late span and logs advice unless it
// did within adviceEvery: the first such span at once, later ones with the
// greatest lateness seen since. lateness < 0 means the decision's time was
// forgotten.
func (m *lateMetrics) advise(log *slog.Logger, wall time.Time, reason string, lateness, quiet time.Duration) {
	if log == nil {
		return
	}
	m.mu.Lock()
	if lateness < 0 {
		m.unknown++
	} else {
		m.worst = max(m.worst, lateness)
	}
	if !m.advised.IsZero() && wall.Sub(m.advised) < adviceEvery {
		m.mu.Unlock()
		return
	}
	worst, unknown := m.worst, m.unknown
	m.advised, m.worst, m.unknown = wall, 0, 0
	m.mu.Unlock()
	if worst == 0 {
		log.Warn(reason+" span arrived after its trace was decided and dropped, later than the node remembers decision times; raise sampler.quiet_period by the longest export delay of your SDKs and Collectors",
			"quiet_period", quiet, "spans", unknown)
		return
	}
	// The span would have been in time had the quiet period been longer
	// by its lateness; advise a whole second more.
	advice := (quiet + worst + time.Second).Truncate(time.Second)
	log.Warn(reason+" span arrived "+worst.Round(100*time.Millisecond).String()+
		" after its trace was decided and dropped; raise sampler.quiet_period above "+advice.String(),
		"quiet_period", quiet, "lateness", worst)
}

// lateness is a shard's half of the accounting. It remembers when recent
// traces were decided, in a direct-mapped table of one 8-byte slot per
// entry: a tag of the trace ID and the decision's record time in
// milliseconds, both 32 bits. The decision cache keeps no time (its
// dropped entries are 8-byte keys, and most decisions are drops); a table
// that only forgets by overwriting costs no eviction work on the decision
// path and is sized like the cache. A late span whose slot was taken by a
// later trace has no known lateness: it is counted, but not observed in
// the histogram.
//
// The same check a decision-changing late span passes here (changes) is
// the trigger a re-read of the dropped trace would use.
type lateness struct {
	slots []uint64
	shift uint
	size  int // slots to allocate on first use

	waits waitCounts
	tr    Trace   // the one-span trace the policy is asked about
	one   [1]Span // its span
}

func newLateness(cacheSize int) lateness {
	n := max(1024, 1<<bits.Len(uint(max(cacheSize, 1)-1)))
	return lateness{size: n, shift: uint(64 - bits.TrailingZeros(uint(n)))}
}

// slot returns id's slot and its tag (never 0, so an empty slot is none).
func (l *lateness) slot(id *TraceID) (int, uint64) {
	lo, hi := binary.LittleEndian.Uint64(id[:8]), binary.LittleEndian.Uint64(id[8:])
	h := (lo ^ bits.RotateLeft64(hi, 29)) * 0x9e3779b97f4a7c15
	return int(h >> l.shift), (hi>>32 | 1) << 32
}

// decided records that id was decided at now (record time).
func (l *lateness) decided(id *TraceID, now int64) {
	if l.slots == nil {
		// Allocated here, not at start: a node that never decides a
		// trace never touches it.
		l.slots = make([]uint64, l.size)
	}
	i, tag := l.slot(id)
	l.slots[i] = tag | uint64(uint32(now/int64(time.Millisecond)))
}

// since returns how long before now id was decided, or -1 if not known.
func (l *lateness) since(id *TraceID, now int64) time.Duration {
	if l.slots == nil {
		return -1
	}
	i, tag := l.slot(id)
	v := l.slots[i]
	if v&^(1<<32-1) != tag {
		return -1
	}
	// Milliseconds wrap every 49 days; a difference of two of them does
	// not care.
	ms := uint32(now/int64(time.Millisecond)) - uint32(v)
	return time.Duration(ms) * time.Millisecond
}

// noteDecision records that id was decided at now (record time). The
// table is sized like the shard's part of the decision cache.
func (sh *shard) noteDecision(id *TraceID, now time.Time) {
	if sh.lateness.size == 0 {
		sh.lateness = newLateness(sh.cfg.DecisionCacheSize / sh.cfg.Shards)
	}
	sh.lateness.decided(id, now.UnixNano())
}

// lateSpan accounts for a span of a decided trace arriving at now (record
// time); kept tells whether the trace was kept.
func (sh *shard) lateSpan(it *Item, kept bool, now time.Time) {
	l := &sh.lateness
	m := sh.s.m.late
	at := now.UnixNano()
	d := l.since(&it.TraceID, at)
	if d >= 0 {
		l.waits.observe(&m.lateness, d.Seconds())
	}
	if kept {
		return
	}
	reason := l.changes(sh.s.policy(), it)
	if reason == "" {
		return
	}
	sh.counters.count(m.changing, reason)
	m.advise(sh.cfg.Logger, sh.decidedAt(now), reason, d, sh.cfg.QuietPeriod)
}

// changes returns why span it would have changed its trace's decision to
// drop, had it arrived in time, or "": the policies that look only at a
// trace's content (error, latency, rules) keep it on its own, in the
// chain's order, so a rule that drops it first wins as it would have.
// Policies that sample (probabilistic, dynamic, a budget's cap) are passed
// over: they decided this trace already, and asking them again would
// count it twice.
func (l *lateness) changes(p Policy, it *Item) string {
	l.one[0] = it.Span
	root := int32(-1)
	if it.Span.Root() {
		root = 0
	}
	l.tr = Trace{ID: it.TraceID, Spans: l.one[:], Bytes: len(it.Span.Raw), root: root,
		hasError: it.Span.Error(), minStart: it.Span.Start, maxEnd: it.Span.End}
	r, _ := contentKeeps(p, &l.tr)
	l.one[0] = Span{}
	l.tr = Trace{}
	return r
}

// contentKeeps walks p as a chain would and returns the late reason of the
// first content policy that keeps t; done is true once a policy dropped it.
func contentKeeps(p Policy, t *Trace) (reason string, done bool) {
	var r string
	switch q := p.(type) {
	case Chain:
		for _, x := range q {
			if r, done := contentKeeps(x, t); r != "" || done {
				return r, done
			}
		}
		return "", false
	case HeadSampling:
		return contentKeeps(q.Inner, t)
	case *Budget:
		return contentKeeps(q.inner, t)
	case ErrorPolicy, *ErrorPolicy:
		r = lateError
	case *LatencyPolicy:
		r = lateSlow
	case *RulesPolicy:
		r = lateRule
	default:
		return "", false
	}
	switch p.Decide(t).Decision {
	case Keep:
		return r, true
	case Drop:
		return "", true
	}
	return "", false
}

// publishLateness adds the shard's lateness observations to the histogram.
func (sh *shard) publishLateness() { sh.s.m.late.lateness.add(&sh.lateness.waits) }
