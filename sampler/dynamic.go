package sampler

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
)

// DynamicConfig configures NewDynamic.
type DynamicConfig struct {
	// Key lists the fields whose values, joined, name a trace's key. Each is
	// one of: service (root service), route (Trace.Route), status_class
	// ("2xx".."5xx" from the root's HTTP status, else "error" or "ok"),
	// span_name (root span name), kind (root span kind), attr:<key> (root
	// span attribute), resource:<key> (root resource attribute). Required.
	Key []string
	// TargetRate is the share of traces to keep overall, in (0, 1].
	TargetRate float64
	// Interval is how often per-key probabilities are recomputed from the
	// counts seen. Default 30s.
	Interval time.Duration
	// MaxKeys bounds the keys tracked. Traces of keys past it are sampled
	// at TargetRate. Default 10,000.
	MaxKeys int
	// NewKeyTraces is how many traces of a key without a computed
	// probability (new since the last interval) are kept at rate 1 in each
	// interval before the rest are sampled at TargetRate, so a key that
	// appears mid-interval is seen at once. Default 5.
	NewKeyTraces int
}

// DynamicPolicy samples per key so that frequent keys are sampled harder and
// rare keys are kept, while the share of traces kept overall tends to
// TargetRate. A trace's key is built from its root span (service, route,
// status class, ...), so an endpoint that serves a million requests an hour
// and one that serves ten both stay visible in the archive.
//
// Each interval the policy counts traces per key, smooths the counts
// (exponentially, half weight to the latest interval), and gives key k the
// keep count min(c_k, λ·ln(1+c_k)), choosing λ so that the counts sum to
// TargetRate·Σc. The logarithmic weight makes frequent keys keep more traces
// than rare ones, but far fewer in proportion; keys below the water line are
// kept whole. The probability p_k = kept_k / c_k applies for the next
// interval; a kept trace's sample rate is 1/p_k. Decisions test the trace
// ID's randomness against p_k like ProbabilisticPolicy, so they nest with
// head sampling (see HeadSampling).
//
// Concurrency: Decide is called from every shard. Keys live in 64 stripes,
// each a map under its own mutex, held only for a lookup and an increment.
// The interval roll is done by whichever Decide first sees the interval end
// (an atomic compare-and-swap elects it); it walks every stripe, one lock at
// a time, costing O(keys) once per interval.
type DynamicPolicy struct {
	fields       []keyField
	target       float64
	interval     time.Duration
	maxPerStripe int
	newKey       int64
	clock        Clock

	targetThreshold uint64
	next            atomic.Int64 // Unix ns of the next roll; 0 until the first decision
	rollMu          sync.Mutex   // one roll at a time
	stripes         [dynStripes]dynStripe
	keyBufs         sync.Pool
}

const dynStripes = 64

type dynStripe struct {
	mu   sync.Mutex
	keys map[uint64]*dynKey
	_    [40]byte // keep stripes on separate cache lines
}

// dynKey is one key's state, guarded by its stripe's mutex.
type dynKey struct {
	count     int64   // traces this interval
	smoothed  float64 // smoothed traces per interval
	p         float64 // keep probability; < 0 while none has been computed
	threshold uint64
	rate      float64
}

type keyField struct {
	kind int
	attr string
}

const (
	keyService = iota
	keyRoute
	keyStatusClass
	keySpanName
	keyKind
	keyAttr
	keyResource
)

// parseKeyFields checks key field names; the errors list what is allowed.
func parseKeyFields(names []string) ([]keyField, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("key: must list at least one field")
	}
	out := make([]keyField, 0, len(names))
	for i, n := range names {
		var f keyField
		switch {
		case n == "service":
			f.kind = keyService
		case n == "route":
			f.kind = keyRoute
		case n == "status_class":
			f.kind = keyStatusClass
		case n == "span_name":
			f.kind = keySpanName
		case n == "kind":
			f.kind = keyKind
		case strings.HasPrefix(n, "attr:") && len(n) > 5:
			f = keyField{kind: keyAttr, attr: n[5:]}
		case strings.HasPrefix(n, "resource:") && len(n) > 9:
			f = keyField{kind: keyResource, attr: n[9:]}
		default:
			return nil, fmt.Errorf("key[%d]: %q is not a key field; allowed: service, route, status_class, span_name, kind, attr:<key>, resource:<key>", i, n)
		}
		out = append(out, f)
	}
	return out, nil
}

// appendKey appends t's key: the fields' values separated by 0x1f (unit
// separator), which does not occur in names or routes.
func appendKey(dst []byte, t *Trace, fields []keyField) []byte {
	s := t.keySpan()
	for i, f := range fields {
		if i > 0 {
			dst = append(dst, 0x1f)
		}
		switch f.kind {
		case keyService:
			dst = append(dst, t.RootService()...)
		case keyRoute:
			dst = t.appendRoute(dst)
		case keyStatusClass:
			dst = t.appendStatusClass(dst)
		case keySpanName:
			if r := t.Root(); r != nil {
				dst = append(dst, r.Name()...)
			}
		case keyKind:
			if r := t.Root(); r != nil {
				dst = append(dst, KindName(r.Kind())...)
			}
		case keyAttr:
			if s != nil {
				if v, ok := s.Attr(f.attr); ok {
					dst = v.AppendString(dst)
				}
			}
		case keyResource:
			if s != nil {
				if v, ok := s.ResourceAttr(f.attr); ok {
					dst = v.AppendString(dst)
				}
			}
		}
	}
	return dst
}

// NewDynamic returns a DynamicPolicy reading time from clock (nil: the wall
// clock). A node passes the sampler's completion clock (record time), so
// intervals are intervals of the traffic, however fast it is read.
func NewDynamic(cfg DynamicConfig, clock Clock) (*DynamicPolicy, error) {
	fields, err := parseKeyFields(cfg.Key)
	if err != nil {
		return nil, err
	}
	if !(cfg.TargetRate > 0 && cfg.TargetRate <= 1) {
		return nil, fmt.Errorf("target_rate: must be in (0, 1], got %v", cfg.TargetRate)
	}
	if cfg.Interval == 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.Interval < 0 {
		return nil, fmt.Errorf("interval: must be positive, got %v", cfg.Interval)
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = 10_000
	}
	if cfg.MaxKeys < 0 {
		return nil, fmt.Errorf("max_keys: must be positive, got %d", cfg.MaxKeys)
	}
	if cfg.NewKeyTraces == 0 {
		cfg.NewKeyTraces = 5
	}
	if clock == nil {
		clock = SystemClock{}
	}
	p := &DynamicPolicy{
		fields:          fields,
		target:          cfg.TargetRate,
		interval:        cfg.Interval,
		maxPerStripe:    max(1, cfg.MaxKeys/dynStripes),
		newKey:          int64(max(cfg.NewKeyTraces, 0)),
		clock:           clock,
		targetThreshold: probThreshold(cfg.TargetRate),
	}
	for i := range p.stripes {
		p.stripes[i].keys = make(map[uint64]*dynKey)
	}
	p.keyBufs.New = func() any { b := make([]byte, 0, 256); return &b }
	return p, nil
}

// Name implements Policy.
func (p *DynamicPolicy) Name() string { return "dynamic" }

const reasonDynamic = "dynamic"

// Decide implements Policy.
func (p *DynamicPolicy) Decide(t *Trace) Verdict {
	if now := t.decisionTime(p.clock); now >= p.next.Load() {
		p.roll(now)
	}
	bp := p.keyBufs.Get().(*[]byte)
	key := appendKey((*bp)[:0], t, p.fields)
	h := xxhash.Sum64(key)
	*bp = key
	p.keyBufs.Put(bp)

	st := &p.stripes[h%dynStripes]
	st.mu.Lock()
	k := st.keys[h]
	if k == nil && len(st.keys) < p.maxPerStripe {
		k = &dynKey{p: -1}
		st.keys[h] = k
	}
	threshold, rate := p.targetThreshold, 1/p.target
	if k != nil {
		k.count++
		switch {
		case k.p >= 0:
			threshold, rate = k.threshold, k.rate
		case k.count <= p.newKey:
			threshold, rate = 0, 1
		}
	}
	st.mu.Unlock()

	if Randomness(t.ID) >= threshold {
		return Verdict{Decision: Keep, SampleRate: rate, Reason: reasonDynamic}
	}
	return Verdict{Decision: Drop, Reason: reasonDynamic}
}

// roll starts a new interval: smooth the counts, forget keys gone quiet,
// and give every key its probability for the next interval.
func (p *DynamicPolicy) roll(now int64) {
	if !p.rollMu.TryLock() {
		return // another shard is rolling
	}
	defer p.rollMu.Unlock()
	next := p.next.Load()
	if now < next {
		return
	}
	p.next.Store(now + int64(p.interval))
	if next == 0 {
		// The first decision starts the first interval: its clock may be
		// record time, unknown until a record has been read.
		return
	}

	var counts []float64
	for i := range p.stripes {
		st := &p.stripes[i]
		st.mu.Lock()
		for h, k := range st.keys {
			if k.p < 0 {
				k.smoothed = float64(k.count) // first interval: no history
			} else {
				k.smoothed = 0.5*k.smoothed + 0.5*float64(k.count)
			}
			k.count = 0
			if k.smoothed < 0.1 {
				delete(st.keys, h)
				continue
			}
			counts = append(counts, k.smoothed)
		}
		st.mu.Unlock()
	}
	lambda := waterLevel(counts, p.target)
	for i := range p.stripes {
		st := &p.stripes[i]
		st.mu.Lock()
		for _, k := range st.keys {
			if k.smoothed == 0 {
				continue // arrived during this roll; stays new
			}
			k.p = keepShare(k.smoothed, lambda)
			k.threshold, k.rate = probThreshold(k.p), 1/k.p
		}
		st.mu.Unlock()
	}
}

// keepShare is the keep probability of a key with c traces per interval at
// water level λ.
func keepShare(c, lambda float64) float64 {
	if c <= 0 || math.IsInf(lambda, 1) {
		return 1
	}
	return math.Min(1, lambda*math.Log1p(c)/c)
}

// waterLevel returns λ such that Σ min(c_k, λ·ln(1+c_k)) = target·Σ c_k,
// by bisection (the sum grows with λ). +Inf when every key can be kept.
func waterLevel(counts []float64, target float64) float64 {
	if target >= 1 || len(counts) == 0 {
		return math.Inf(1)
	}
	total, hi := 0.0, 0.0
	for _, c := range counts {
		total += c
		hi = math.Max(hi, c/math.Log1p(c))
	}
	want := target * total
	lo := 0.0
	for range 60 {
		mid := (lo + hi) / 2
		kept := 0.0
		for _, c := range counts {
			kept += math.Min(c, mid*math.Log1p(c))
		}
		if kept < want {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi
}

var _ Policy = (*DynamicPolicy)(nil)
