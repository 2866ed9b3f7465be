package sampler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// Config sets how traces are buffered and when they are complete.
type Config struct {
	// Shards is the number of shard goroutines. Default: GOMAXPROCS.
	Shards int
	// QuietPeriod: a trace whose root span has arrived is complete once no
	// span has arrived for this long. Default 12s: SDKs export on a timer
	// of their own (5s by default, up to 10s seen), each service on its
	// own phase, and the root's service may export first; every other
	// span of the trace ended before the root did, so it arrives within
	// one export interval, plus a gateway Collector's batch, after the
	// root. 12s covers a 10s interval, a 200ms batch and the time to
	// reach Kafka.
	QuietPeriod time.Duration
	// MaxWait: a trace is decided this long after its first span arrived,
	// root or not. Default 60s: no span arrives before the trace starts,
	// and the last up to one export interval and a batch after the root
	// ends, so a trace of duration d needs d plus that; 60s leaves room
	// for traces of most of a minute with 10s timers.
	MaxWait time.Duration
	// MaxSpansPerTrace: a trace is decided when it reaches this many spans;
	// later spans follow the decision. Default 10,000.
	MaxSpansPerTrace int
	// MaxBufferedBytes bounds the encoded span bytes buffered by the node.
	// Past it, the oldest traces are decided early. Kept traces the archive
	// has not yet written count too (Kept.Hold): from 90% of the bound,
	// with them, input pauses (Full). Default 1 GiB.
	MaxBufferedBytes int64
	// DecisionCacheSize is how many recent decisions are remembered for late
	// spans. Default 1,000,000 (about 55 MB, and 8 MB of decision times
	// for measuring lateness).
	DecisionCacheSize int
	// TickInterval is how often shards look for complete traces. Default 100ms.
	TickInterval time.Duration
	// InputClock, when set, is the time completion is measured in: a span
	// arrives at its Pending.TS (the Kafka record timestamp) and a trace
	// is quiet when InputClock says so. The router's watermarks make this
	// the slowest partition's progress, so a partition read late, or not
	// at all for a while, holds decisions back instead of splitting
	// traces. Nil means the wall clock. The policies that measure time
	// must read the same clock (see DecisionClock).
	InputClock Clock
	// QueueBatches is the depth, in batches, of each shard's input queue.
	// Default 4: a batch is a shard's part of one poll (tens of thousands
	// of spans), and queued spans are live heap that holds their fetch
	// buffers too; a deeper queue only moves the backlog from Kafka into
	// memory.
	QueueBatches int
	// Logger receives the advice when a late span would have changed a
	// decision to drop (at most one line a minute). Nil: not logged.
	Logger *slog.Logger
}

// Validate fills defaults and checks every field, reporting all problems.
func (c *Config) Validate() error {
	if c.Shards == 0 {
		c.Shards = runtime.GOMAXPROCS(0)
	}
	if c.QuietPeriod == 0 {
		c.QuietPeriod = 12 * time.Second
	}
	if c.MaxWait == 0 {
		c.MaxWait = 60 * time.Second
	}
	if c.MaxSpansPerTrace == 0 {
		c.MaxSpansPerTrace = 10_000
	}
	if c.MaxBufferedBytes == 0 {
		c.MaxBufferedBytes = 1 << 30
	}
	if c.DecisionCacheSize == 0 {
		c.DecisionCacheSize = 1_000_000
	}
	if c.TickInterval == 0 {
		c.TickInterval = 100 * time.Millisecond
	}
	if c.QueueBatches == 0 {
		c.QueueBatches = 4
	}
	var errs []string
	if c.Shards < 1 || c.Shards > 1024 {
		errs = append(errs, fmt.Sprintf("sampler.shards: must be 1..1024, got %d", c.Shards))
	}
	if c.QuietPeriod < 0 {
		errs = append(errs, "sampler.quiet_period: must be positive")
	}
	if c.MaxWait < c.QuietPeriod {
		errs = append(errs, fmt.Sprintf("sampler.max_wait: must be at least quiet_period (%v), got %v", c.QuietPeriod, c.MaxWait))
	}
	if c.MaxSpansPerTrace < 1 {
		errs = append(errs, "sampler.max_spans_per_trace: must be at least 1")
	}
	if c.MaxBufferedBytes < 1<<20 {
		errs = append(errs, fmt.Sprintf("sampler.max_buffered_bytes: must be at least 1MiB, got %d", c.MaxBufferedBytes))
	}
	if c.DecisionCacheSize < 0 {
		errs = append(errs, "sampler.decision_cache_size: must not be negative")
	}
	if c.TickInterval <= 0 || c.TickInterval > c.QuietPeriod && c.QuietPeriod > 0 {
		errs = append(errs, "sampler.tick_interval: must be positive and at most quiet_period")
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// Sampler buffers traces across its shards and decides them.
type Sampler struct {
	cfg    Config
	m      *Metrics
	pol    atomic.Pointer[policyBox]
	shards []*shard
	out    chan<- *Kept
	clock  Clock
	free   chan []Item // emptied batches, for reuse (see getBatch)

	bufferedBytes atomic.Int64
	// keptBytes is the memory held by kept traces sent out and not yet
	// written by the archive (see Kept.Hold).
	keptBytes atomic.Int64

	// owner says which traces this node owns; nil means all of them.
	owner atomic.Pointer[ownerBox]

	// aside holds spans of traces this node does not own, set aside by the
	// shards for the caller to route to the owner (TakeAside). Shards
	// append under asideMu; asideOldest is their earliest record time.
	asideMu     sync.Mutex
	aside       []Item
	asideOldest int64
	// asideDecisions are kept decisions for traces this node no longer
	// owns, moved out of the shards' caches for the caller to send to the
	// owners (TakeAsideDecisions).
	asideDecisions []KeptDecision
}

type ownerBox struct{ mine func(*TraceID) bool }

type policyBox struct{ p Policy }

// New returns a Sampler that sends kept traces to out. cfg must have passed
// Validate. Run closes out when it returns.
func New(cfg Config, p Policy, out chan<- *Kept, m *Metrics, clock Clock) *Sampler {
	if clock == nil {
		clock = SystemClock{}
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	s := &Sampler{cfg: cfg, m: m, out: out, clock: clock, free: make(chan []Item, 2*cfg.Shards+2)}
	s.SetPolicy(p)
	s.shards = make([]*shard, cfg.Shards)
	for i := range s.shards {
		s.shards[i] = newShard(s, i)
	}
	return s
}

// DecisionClock is the clock traces are decided by: InputClock, or the wall
// clock without one. Policies that measure time take it (WithClock), so a
// backlog and the same traffic live get the same decisions.
func (s *Sampler) DecisionClock() Clock {
	if s.cfg.InputClock != nil {
		return s.cfg.InputClock
	}
	return s.clock
}

// SetPolicy swaps the policy used for traces decided from now on. Safe to
// call at any time; this is how a configuration reload takes effect.
func (s *Sampler) SetPolicy(p Policy) {
	s.m.StartAtZero(p)
	s.pol.Store(&policyBox{p})
}

func (s *Sampler) policy() Policy { return s.pol.Load().p }

// SetOwner installs the test of which traces this node owns (nil: all).
// Call it when the cluster's ring changes, before anything else reacts to
// the change: from then on the shards never decide a trace the test
// rejects, nor buffer new spans of one. They set its spans aside for
// TakeAside, so a trace is decided in one place only, by its owner, even
// while the old owner has not yet handed it over. The decision for a kept
// trace decided here before the change moves out of the cache at the
// shard's next tick (or in Handoff), for TakeAsideDecisions; until then
// late spans that arrive here still follow it. Decisions to drop stay.
func (s *Sampler) SetOwner(mine func(*TraceID) bool) {
	if mine == nil {
		s.owner.Store(nil)
		return
	}
	s.owner.Store(&ownerBox{mine})
}

// owns reports whether this node owns id. It runs once per span.
func (s *Sampler) owns(id *TraceID) bool {
	b := s.owner.Load()
	return b == nil || b.mine(id)
}

// putAside queues spans of a trace this node does not own.
func (s *Sampler) putAside(id TraceID, spans []Span) {
	s.asideMu.Lock()
	defer s.asideMu.Unlock()
	for i := range spans {
		s.aside = append(s.aside, Item{TraceID: id, Span: spans[i]})
		if src := spans[i].Src; src != nil && src.TS > 0 && (s.asideOldest == 0 || src.TS < s.asideOldest) {
			s.asideOldest = src.TS
		}
	}
}

// TakeAside returns, and forgets, the spans set aside because this node
// does not own their traces. They are unsettled: the caller routes them to
// their owners. A cluster node calls it after each ring change (Handoff
// does) and periodically, for spans that reach it from a peer whose ring
// is behind.
func (s *Sampler) TakeAside() []Item {
	s.asideMu.Lock()
	defer s.asideMu.Unlock()
	out := s.aside
	s.aside, s.asideOldest = nil, 0
	s.m.handedOff.Add(float64(len(out)))
	return out
}

// AsideSpans is the number of spans set aside and not yet taken.
func (s *Sampler) AsideSpans() int {
	s.asideMu.Lock()
	defer s.asideMu.Unlock()
	return len(s.aside)
}

// OldestAside is the earliest record time (Pending.TS) of the spans set
// aside and not yet taken, or 0. Until they reach their owner, the
// watermark must not pass them.
func (s *Sampler) OldestAside() int64 {
	s.asideMu.Lock()
	defer s.asideMu.Unlock()
	return s.asideOldest
}

// Policy returns the policy in force.
func (s *Sampler) Policy() Policy { return s.policy() }

// BufferedBytes is the encoded size of the spans buffered now.
func (s *Sampler) BufferedBytes() int64 { return s.bufferedBytes.Load() }

// KeptBytes is the memory held by kept traces on their way to the archive
// or waiting there to be written (Kept.Hold).
func (s *Sampler) KeptBytes() int64 { return s.keptBytes.Load() }

// Full reports whether the memory under the bound, the buffer and the kept
// traces not yet written, is at the level where the shards decide their
// oldest traces early (90% of MaxBufferedBytes): input should pause until
// they have made room, or the archive has written what it holds.
func (s *Sampler) Full() bool {
	return s.bufferedBytes.Load()+s.keptBytes.Load() >= s.cfg.MaxBufferedBytes/10*9
}

// shardOf picks the shard of a trace. The hash is seeded apart from the
// ring's so that shard and node choice are independent.
func (s *Sampler) shardOf(id *TraceID) int {
	return int(xxhash.Sum64(id[:]) % uint64(len(s.shards)))
}

// getBatch returns an empty batch with room for about n items. Batches go
// back to a free list of a few, not a sync.Pool: a pool is emptied at every
// collection, and a busy node collects many times a second, so each poll
// would grow fresh batches of tens of thousands of items again.
func (s *Sampler) getBatch(n int) []Item {
	select {
	case b := <-s.free:
		if cap(b) >= n {
			return b
		}
	default:
	}
	return make([]Item, 0, n)
}

func (s *Sampler) putBatch(b []Item) {
	clear(b)
	select {
	case s.free <- b[:0]:
	default:
	}
}

// Add hands items to the shards that own their traces. It blocks while a
// shard's queue is full (backpressure on the caller, usually the Kafka poll
// loop) and returns ctx.Err() if ctx ends first; items not yet handed over
// are then left unsettled. The caller keeps ownership of items.
func (s *Sampler) Add(ctx context.Context, items []Item) error {
	if len(s.shards) == 1 {
		return s.send(ctx, 0, append(s.getBatch(len(items)), items...))
	}
	batches := make([][]Item, len(s.shards))
	share := len(items)/len(s.shards) + len(items)/(4*len(s.shards)) + 16
	for i := range items {
		n := s.shardOf(&items[i].TraceID)
		if batches[n] == nil {
			batches[n] = s.getBatch(share)
		}
		batches[n] = append(batches[n], items[i])
	}
	for n, b := range batches {
		if b == nil {
			continue
		}
		if err := s.send(ctx, n, b); err != nil {
			return err
		}
	}
	return nil
}

func (s *Sampler) send(ctx context.Context, n int, b []Item) error {
	select {
	case s.shards[n].in <- b:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Flush decides every trace buffered now, as if all were complete, and
// returns when the shards have sent the kept ones on. For bounded runs whose
// input is known to have ended.
func (s *Sampler) Flush(ctx context.Context) error {
	return s.onShards(ctx, func(sh *shard, now time.Time) { sh.flush(ctx, now) })
}

// Expire decides the traces complete by now, as the shards' ticker does,
// after every batch queued before the call is buffered. For simulations
// that drive the clocks themselves and must not depend on when the ticker
// fires.
func (s *Sampler) Expire(ctx context.Context) error {
	return s.onShards(ctx, func(sh *shard, now time.Time) {
		if in := sh.cfg.InputClock; in != nil {
			now = in.Now()
		}
		sh.expire(ctx, now)
	})
}

// Handoff removes every buffered trace this node no longer owns (see
// SetOwner) and returns its spans, with those already set aside, still
// unsettled, for the caller to send to the trace's new owner. Used when the
// ring changes, and for all traces when this node leaves. Kept decisions
// for traces it no longer owns are set aside too, for TakeAsideDecisions;
// decisions to drop stay in this node's cache.
func (s *Sampler) Handoff(ctx context.Context) ([]Item, error) {
	if err := s.onShards(ctx, func(sh *shard, _ time.Time) { sh.handoff() }); err != nil {
		return nil, err
	}
	return s.TakeAside(), nil
}

// onShards runs fn on every shard goroutine, after the shard has taken
// every batch queued before the call, and waits for all.
func (s *Sampler) onShards(ctx context.Context, fn func(sh *shard, now time.Time)) error {
	dones := make([]chan struct{}, len(s.shards))
	for i, sh := range s.shards {
		dones[i] = make(chan struct{})
		select {
		case sh.ctl <- shardCall{fn: fn, done: dones[i]}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, d := range dones {
		select {
		case <-d:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Run runs the shards until ctx is done, then closes the output channel.
// Traces still buffered then are neither decided nor settled: Kafka will
// deliver their spans again after a restart.
func (s *Sampler) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, sh := range s.shards {
		wg.Go(func() { sh.loop(ctx, s.clock) })
	}
	wg.Wait()
	close(s.out)
	return nil
}

// shardCall is work run on a shard goroutine.
type shardCall struct {
	fn   func(sh *shard, now time.Time)
	done chan struct{}
}

// loop is the shard goroutine.
func (sh *shard) loop(ctx context.Context, clock Clock) {
	tick := time.NewTicker(sh.cfg.TickInterval)
	defer tick.Stop()
	defer sh.arena.close()
	input := sh.cfg.InputClock
	take := func(batch []Item) {
		now := clock.Now()
		sh.wall = now
		// A span whose record time is behind the completion clock as
		// this shard last decided by it (spans routed again after a peer
		// failed, handed over after a ring change, re-read after a crash)
		// arrives then, not in the past: otherwise its trace would be
		// decided at once on the first piece to come back, and the piece
		// holding the error would follow that decision. Spans merely
		// queued here while the watermark moved past them keep their
		// record time: a backlog read faster than real time is then
		// decided as it would have been live (Trace.Complete).
		for i := range batch {
			sh.readAhead(batch, i)
			at := now
			if src := batch[i].Span.Src; input != nil && src != nil && src.TS != 0 {
				at = time.Unix(0, max(src.TS, sh.expiredAt))
			}
			sh.add(ctx, &batch[i], at)
		}
		sh.s.putBatch(batch)
	}
	for {
		sh.publish()
		select {
		case batch := <-sh.in:
			take(batch)
		case <-tick.C:
			// Read the completion clock first, then take every queued
			// batch: whatever was handed over before the clock reached
			// this value is then buffered before traces are decided by it.
			sh.wall = clock.Now()
			now := sh.wall
			if input != nil {
				now = input.Now()
			}
			for drained := false; !drained; {
				select {
				case batch := <-sh.in:
					take(batch)
				default:
					drained = true
				}
			}
			sh.moveDecisions()
			sh.expire(ctx, now)
		case call := <-sh.ctl:
			// Take what is queued first, so the call covers every Add
			// that returned before it.
			for drained := false; !drained; {
				select {
				case batch := <-sh.in:
					take(batch)
				default:
					drained = true
				}
			}
			sh.wall = clock.Now()
			call.fn(sh, sh.wall)
			sh.publish() // what the caller reads next reflects the call
			close(call.done)
		case <-ctx.Done():
			sh.publish()
			return
		}
	}
}

// Metrics are the sampler's Prometheus metrics.
type Metrics struct {
	spansBuffered  prometheus.Gauge
	bytesBuffered  prometheus.Gauge
	tracesBuffered prometheus.Gauge
	completed      *prometheus.CounterVec
	decided        *prometheus.CounterVec
	spansKept      prometheus.Counter
	spansDropped   prometheus.Counter
	lateSpans      *prometheus.CounterVec
	noRoot         prometheus.Counter
	orphanSpans    prometheus.Counter
	decisionWait   waitHistogram
	handedOff      prometheus.Counter
	late           *lateMetrics

	overlimitFlipped prometheus.Counter
	overlimitLost    prometheus.Counter
}

// NewMetrics creates the sampler metrics and registers them with reg (nil:
// not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		spansBuffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tailsift_sampler_buffered_spans", Help: "Spans buffered, waiting for their trace to be decided."}),
		bytesBuffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tailsift_sampler_buffered_bytes", Help: "Encoded bytes of the buffered spans."}),
		tracesBuffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tailsift_sampler_buffered_traces", Help: "Traces buffered, not yet decided."}),
		completed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailsift_sampler_traces_completed_total",
			Help: "Traces handed to the policy, by why they were considered complete (quiet, max_wait, span_limit, memory, shutdown)."},
			[]string{"cause"}),
		decided: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailsift_sampler_traces_decided_total", Help: "Traces decided, by outcome and reason."},
			[]string{"decision", "reason"}),
		spansKept: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_sampler_spans_kept_total", Help: "Spans sent to the archive, late spans included."}),
		spansDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_sampler_spans_dropped_total", Help: "Spans of dropped traces."}),
		lateSpans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailsift_sampler_late_spans_total", Help: "Spans that arrived after their trace was decided, by the decision they followed."},
			[]string{"decision"}),
		noRoot: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_sampler_traces_without_root_total", Help: "Traces decided before their root span arrived."}),
		orphanSpans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_sampler_orphan_spans_total", Help: "Spans of kept traces whose parent span was not in the trace when it was decided."}),
		decisionWait: newWaitHistogram("tailsift_sampler_decision_wait_seconds",
			"Time from a trace's first span to its decision.",
			[]float64{0.1, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120}),
		handedOff: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_sampler_handed_off_spans_total", Help: "Spans handed to another node because it owns their trace (after a ring change, or sent here by a peer whose ring was behind)."}),
		late: newLateMetrics(),
		overlimitFlipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_sampler_overlimit_traces_kept_late_total",
			Help: "Traces over max_spans_per_trace dropped on their first pieces and kept on a later one (an error, latency or rule match that came later)."}),
		overlimitLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_sampler_overlimit_spans_lost_total",
			Help: "Spans of kept traces that are not archived: dropped with the trace's first pieces, at max_spans_per_trace, before a later piece kept it."}),
	}
	// Known label values start at zero, so dashboards see a flat line,
	// not "no data", until the first event; see also StartAtZero.
	for _, c := range []string{causeQuiet, causeMaxWait, causeSpans, causeMemory, causeShutdown} {
		m.completed.WithLabelValues(c)
	}
	for _, d := range []string{"keep", "drop"} {
		m.lateSpans.WithLabelValues(d)
	}
	if reg != nil {
		reg.MustRegister(m.spansBuffered, m.bytesBuffered, m.tracesBuffered, m.completed, m.decided,
			m.spansKept, m.spansDropped, m.lateSpans, m.noRoot, m.orphanSpans, &m.decisionWait, m.handedOff,
			m.overlimitFlipped, m.overlimitLost)
		reg.MustRegister(m.late.collectors()...)
	}
	return m
}
