package sampler

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Causes of a decision, as counted in tailsift_sampler_traces_completed_total.
const (
	causeQuiet    = "quiet"    // root seen and quiet period passed
	causeMaxWait  = "max_wait" // waited the maximum time
	causeSpans    = "span_limit"
	causeMemory   = "memory"   // decided early to stay under the byte limit
	causeShutdown = "shutdown" // Flush at the end of a run
)

// buffered is a trace being buffered by a shard: what Trace holds, kept
// small (there is one per buffered trace), in the shard's traceTable. Its
// spans are in the shard's arena, a list from head to tail; a Trace is made
// from it when the trace is decided (shard.trace).
type buffered struct {
	id               TraceID
	first, last      int64 // Unix nanoseconds: Trace.FirstSeen, Trace.LastSeen
	minStart, maxEnd int64
	bytes            int64
	head, tail       spanRef
	n                int32  // spans buffered
	root             int32  // number of the first root span, -1 when none
	self, gen        uint32 // place in the table's slab, and its generation
	used             bool   // holds a trace (false: free in the slab)
	hasError         bool
	inQuiet          bool // has an entry in the quiet heap
}

// observe updates b with s, its next span, arriving at now.
func (b *buffered) observe(s *Span, now int64) {
	if s.Root() && b.root < 0 {
		b.root = b.n
	}
	if s.Error() {
		b.hasError = true
	}
	if b.n == 0 || s.Start < b.minStart {
		b.minStart = s.Start
	}
	if b.n == 0 || s.End > b.maxEnd {
		b.maxEnd = s.End
	}
	b.bytes += int64(len(s.Raw))
	b.last = max(b.last, now)
}

// trace returns b as a Trace with spans, valid until the next call.
func (sh *shard) trace(b *buffered, spans []Span) *Trace {
	sh.tr = Trace{
		ID: b.id, Spans: spans, FirstSeen: time.Unix(0, b.first), LastSeen: time.Unix(0, b.last), Bytes: int(b.bytes),
		root: b.root, hasError: b.hasError, minStart: b.minStart, maxEnd: b.maxEnd,
		shard: sh.idx, shards: int32(sh.cfg.Shards),
	}
	return &sh.tr
}

// shard owns a part of the trace ID space: its trace table, completion
// queues and decision cache belong to its goroutine alone.
type shard struct {
	idx    int32 // index among the sampler's shards
	cfg    *Config
	s      *Sampler
	traces traceTable
	bytes  int64

	// byAge holds traces in first-seen order (now never goes backwards on one
	// shard), for the maximum wait and for memory pressure. Decided traces
	// are skipped when they reach the front.
	byAge     []traceRef
	byAgeHead int

	// quiet holds traces whose root has arrived, by the time they become
	// quiet unless another span comes.
	quiet quietHeap

	cache     *decisionCache
	ownerSeen *ownerBox         // the ownership moveDecisions last applied to cache
	late      map[TraceID]*Kept // late spans of kept traces, flushed each tick
	due       []*buffered       // traces expire is about to decide
	aheadSum  uint64            // readAhead's loads, summed so they stay
	ids       idScratch         // for counting orphan spans at decision
	lateness  lateness          // when recent traces were decided (lateness.go)

	in  chan []Item
	ctl chan shardCall

	// wall is the wall-clock time of the current loop iteration, for
	// DecidedAt; the now passed around is the completion clock (input time
	// when an InputClock is configured).
	wall time.Time
	// expiredAt is the completion clock's time of the last expire, Unix
	// ns: spans arriving behind it arrive at it (see loop).
	expiredAt int64

	arena   spanArena
	scopes  ptrTable[Scope]   // scopes of buffered spans
	srcs    ptrTable[Pending] // input units of buffered spans
	scratch []Span            // spans of a trace being decided and dropped
	tr      Trace             // the trace being decided

	// Changes to the buffer gauges and to Sampler.bufferedBytes not yet
	// published: the shard adds them up per span and publishes them once
	// per loop iteration, after a tick's decisions, and whenever
	// publishBytes have accumulated (publish), so the per-span path rarely
	// touches memory shared with the other shards.
	dSpans, dBytes, dTraces int64

	// Decision counts not yet published, added to the shared metrics by
	// publish. Updated as each trace was decided, the counters and the
	// wait histogram, atomic writes to memory both shards write, cost 172
	// ns a decision on two goroutines against 28 counted here
	// (BenchmarkDecisionMetrics), about 20 ns a span.
	counters                         counterCache
	waits                            waitCounts
	dKept, dDropped, dNoRoot, dOrphs uint64
	dFlipped, dLost                  uint64 // over-limit traces kept on a later piece, and the spans lost
	counted                          bool   // any of the above is not published
}

// counterCache holds the children of labelled counters a shard counts each
// decision in, with the counts not yet published. CounterVec.WithLabelValues
// hashes the labels and takes the vector's lock on every call; a decision
// is made hundreds of thousands of times a second, with a handful of label
// values.
type counterCache map[counterKey]*pendingCount

type counterKey struct {
	vec  *prometheus.CounterVec
	a, b string
}

// pendingCount is a counter and what is to be added to it.
type pendingCount struct {
	c prometheus.Counter
	n uint64
}

// count adds one to vec's child for the label values lv (one or two).
func (c *counterCache) count(vec *prometheus.CounterVec, lv ...string) {
	k := counterKey{vec: vec, a: lv[0]}
	if len(lv) > 1 {
		k.b = lv[1]
	}
	x, ok := (*c)[k]
	if !ok {
		if *c == nil {
			*c = make(counterCache)
		}
		x = &pendingCount{c: vec.WithLabelValues(lv...)}
		(*c)[k] = x
	}
	x.n++
}

// flush adds the pending counts to their counters.
func (c counterCache) flush() {
	for _, x := range c {
		if x.n > 0 {
			x.c.Add(float64(x.n))
			x.n = 0
		}
	}
}

// publishBytes bounds how far Sampler.bufferedBytes, which pauses input near
// the memory bound (Sampler.Full), may lag behind a shard's buffer.
const publishBytes = 64 << 10

// publish applies the buffer changes accumulated since the last call.
func (sh *shard) publish() {
	m := sh.s.m
	if sh.counted {
		sh.counted = false
		sh.counters.flush()
		m.decisionWait.add(&sh.waits)
		addCount(m.spansKept, &sh.dKept)
		addCount(m.spansDropped, &sh.dDropped)
		addCount(m.noRoot, &sh.dNoRoot)
		addCount(m.orphanSpans, &sh.dOrphs)
		addCount(m.overlimitFlipped, &sh.dFlipped)
		addCount(m.overlimitLost, &sh.dLost)
		sh.publishLateness()
	}
	if sh.dSpans == 0 && sh.dBytes == 0 && sh.dTraces == 0 {
		return
	}
	m.spansBuffered.Add(float64(sh.dSpans))
	m.bytesBuffered.Add(float64(sh.dBytes))
	m.tracesBuffered.Add(float64(sh.dTraces))
	sh.s.bufferedBytes.Add(sh.dBytes)
	sh.dSpans, sh.dBytes, sh.dTraces = 0, 0, 0
}

// addCount adds *n to c and zeroes it.
func addCount(c prometheus.Counter, n *uint64) {
	if *n > 0 {
		c.Add(float64(*n))
		*n = 0
	}
}

func newShard(s *Sampler, idx int) *shard {
	return &shard{
		idx:   int32(idx),
		cfg:   &s.cfg,
		s:     s,
		cache: newDecisionCache(s.cfg.DecisionCacheSize / s.cfg.Shards),
		late:  make(map[TraceID]*Kept),
		in:    make(chan []Item, s.cfg.QueueBatches),
		ctl:   make(chan shardCall),
		// Room for twice the shard's share of the byte bound: chunks
		// pinned by a few long-lived traces, and the bound's overshoot
		// before the oldest traces are decided. Past it, chunks come
		// from the heap.
		arena: newSpanArena(int(min(2*s.cfg.MaxBufferedBytes/int64(s.cfg.Shards), 1<<40))),
	}
}

// add buffers one span. It is the per-span hot path of the sampler.
func (sh *shard) add(ctx context.Context, it *Item, now time.Time) {
	b := sh.traces.get(&it.TraceID)
	if b == nil {
		if d, dropped := sh.cache.lookup(it.TraceID); d != nil || dropped {
			sh.lateSpan(it, d != nil, now)
			sh.addLate(ctx, it, d)
			return
		}
	}
	if !sh.s.owns(&it.TraceID) {
		// Another node owns the trace now: what is buffered of it, and
		// this span, go there instead of being decided here on a piece.
		if b != nil {
			sh.setAside(b)
		}
		sh.s.putAside(it.TraceID, []Span{it.Span})
		return
	}
	at := now.UnixNano()
	if b == nil {
		b = sh.traces.insert(&it.TraceID)
		b.first, b.last, b.root = at, at, -1
		sh.byAge = append(sh.byAge, sh.traces.ref(b))
		sh.dTraces++
	}
	sp := &it.Span
	b.observe(sp, at)
	b.tail = sh.store(sp, &it.TraceID, b.tail)
	if b.head == 0 {
		b.head = b.tail
	}
	b.n++
	n := int64(len(sp.Raw))
	sh.bytes += n
	sh.dSpans++
	sh.dBytes += n
	if sh.dBytes >= publishBytes {
		sh.publish()
	}

	if b.root >= 0 && !b.inQuiet {
		b.inQuiet = true
		sh.quiet.push(quietEntry{due: at + int64(sh.cfg.QuietPeriod), r: sh.traces.ref(b)})
	}
	if int(b.n) >= sh.cfg.MaxSpansPerTrace {
		sh.decide(ctx, b, now, causeSpans)
	}
	for sh.bytes > sh.cfg.MaxBufferedBytes/int64(sh.cfg.Shards) {
		old := sh.oldest()
		if old == nil {
			break
		}
		sh.decide(ctx, old, now, causeMemory)
	}
}

// addLate handles a span whose trace was already decided. Late spans of a
// kept trace go out each tick, or as soon as they reach the span limit, so
// a trace that never ends (a hot trace ID) holds at most that many here.
func (sh *shard) addLate(ctx context.Context, it *Item, d *KeptDecision) {
	sh.counted = true
	if d == nil {
		sh.counters.count(sh.s.m.lateSpans, "drop")
		if it.Span.Src != nil {
			it.Span.Src.Done()
		}
		return
	}
	sh.counters.count(sh.s.m.lateSpans, "keep")
	k := sh.late[it.TraceID]
	if k == nil {
		c := d.kept()
		k = &c
		k.Late = true
		sh.late[it.TraceID] = k
	}
	k.Spans = append(k.Spans, it.Span)
	if len(k.Spans) >= sh.cfg.MaxSpansPerTrace {
		delete(sh.late, it.TraceID)
		sh.emit(ctx, k)
	}
}

// oldest returns the oldest undecided trace, or nil.
func (sh *shard) oldest() *buffered {
	for sh.byAgeHead < len(sh.byAge) {
		if b := sh.traces.at(sh.byAge[sh.byAgeHead]); b != nil {
			return b
		}
		sh.byAgeHead++
	}
	return nil
}

// expire decides every trace that is complete at now, and flushes late spans.
func (sh *shard) expire(ctx context.Context, now time.Time) {
	at := now.UnixNano()
	sh.expiredAt = max(sh.expiredAt, at)
	for len(sh.quiet) > 0 && sh.quiet[0].due <= at {
		// Up to decideBatch complete traces at a time: their spans are
		// read in one interleaved pass first (loadSpans), then decided.
		due := sh.due[:0]
		for len(due) < decideBatch && len(sh.quiet) > 0 && sh.quiet[0].due <= at {
			b := sh.traces.at(sh.quiet.pop().r)
			if b == nil {
				continue // decided since
			}
			if next := b.last + int64(sh.cfg.QuietPeriod); next > at {
				sh.quiet.push(quietEntry{due: next, r: sh.traces.ref(b)})
				continue
			}
			b.inQuiet = false
			due = append(due, b)
		}
		sh.loadSpans(due)
		for _, b := range due {
			sh.decide(ctx, b, now, causeQuiet)
		}
		clear(due)
		sh.due = due[:0]
	}
	deadline := at - int64(sh.cfg.MaxWait)
	for {
		b := sh.oldest()
		if b == nil || b.first > deadline {
			break
		}
		sh.decide(ctx, b, now, causeMaxWait)
	}
	// Near the memory bound, input pauses (Sampler.Full) and time may stand
	// still with it, so room is made here: the oldest traces are decided
	// early down to 80% of the bound.
	if limit := sh.cfg.MaxBufferedBytes / int64(sh.cfg.Shards); sh.bytes >= limit/10*9 {
		for sh.bytes > limit/10*8 {
			old := sh.oldest()
			if old == nil {
				break
			}
			sh.decide(ctx, old, now, causeMemory)
		}
	}
	sh.compactAge()
	sh.arena.trim(sh.wall)
	sh.publish()
	for id, k := range sh.late {
		delete(sh.late, id)
		sh.emit(ctx, k)
	}
}

// compactAge drops the decided prefix of byAge once it dominates the slice.
func (sh *shard) compactAge() {
	if sh.byAgeHead > 1024 && sh.byAgeHead > len(sh.byAge)/2 {
		n := copy(sh.byAge, sh.byAge[sh.byAgeHead:])
		sh.byAge = sh.byAge[:n]
		sh.byAgeHead = 0
	}
}

// handoff sets aside every buffered trace, and every kept decision, this
// node no longer owns.
func (sh *shard) handoff() {
	sh.moveDecisions()
	sh.traces.each(func(b *buffered) {
		if !sh.s.owns(&b.id) {
			sh.setAside(b)
		}
	})
}

// setAside removes b from the buffer, undecided, and queues its spans for
// the trace's owner.
func (sh *shard) setAside(b *buffered) {
	sh.traces.remove(b) // skipped by byAge and the quiet heap from now on
	sh.release(b)
	spans := sh.spansOf(b, make([]Span, 0, b.n))
	ownSpans(spans, &b.id)
	sh.dropSpans(b)
	sh.s.putAside(b.id, spans)
}

// completeAt is when b became complete by the completion clock, now at the
// latest: a trace whose root has arrived completes a quiet period after its
// last span, any trace at the maximum wait after its first.
func (sh *shard) completeAt(b *buffered, now int64) int64 {
	due := b.first + int64(sh.cfg.MaxWait)
	if b.root >= 0 {
		due = min(due, b.last+int64(sh.cfg.QuietPeriod))
	}
	return min(now, due)
}

// release removes b's bytes and spans from the buffer accounting.
func (sh *shard) release(b *buffered) {
	sh.bytes -= b.bytes
	sh.dTraces--
	sh.dSpans -= int64(b.n)
	sh.dBytes -= b.bytes
}

// decide runs the policy on b and sends it on or settles it. A trace this
// node no longer owns is not decided, whatever the cause (quiet, max wait,
// span limit, memory, shutdown): deciding it here on the piece it holds
// while its owner decides the rest splits it. It is set aside for the
// owner instead; that also frees its memory.
func (sh *shard) decide(ctx context.Context, b *buffered, now time.Time, cause string) {
	if !sh.s.owns(&b.id) {
		sh.setAside(b)
		return
	}
	sh.traces.remove(b)
	sh.release(b)
	sh.scratch = sh.spansOf(b, sh.scratch[:0])
	t := sh.trace(b, sh.scratch)
	t.Complete = time.Unix(0, sh.completeAt(b, now.UnixNano()))
	defer func() {
		clear(sh.scratch)
		sh.tr = Trace{}
		sh.dropSpans(b)
	}()
	m := sh.s.m
	sh.counted = true
	sh.counters.count(m.completed, cause)
	sh.noteDecision(&b.id, now)
	sh.waits.observe(&m.decisionWait, now.Sub(t.FirstSeen).Seconds())
	if b.root < 0 {
		sh.dNoRoot++
	}

	prior := sh.cache.partialOf(&b.id)
	if prior != nil {
		prior.fold(t)
	}
	v := sh.s.policy().Decide(t)
	if v.Decision != Keep {
		sh.counters.count(m.decided, "drop", v.Reason)
		sh.dDropped += uint64(len(t.Spans))
		switch {
		case prior != nil:
			prior.add(t)
		case cause == causeSpans:
			// More of the trace is to come, and may keep it (overlimit.go).
			p := &partialDrop{id: b.id}
			p.add(t)
			sh.cache.addPartial(p)
		default:
			sh.cache.addDropped(b.id)
		}
		for i := range t.Spans {
			if src := t.Spans[i].Src; src != nil {
				src.Done()
			}
		}
		return
	}
	sh.counters.count(m.decided, "keep", v.Reason)
	// Orphans are counted in kept traces only: they are what the archive
	// shows incomplete, and the count needs every span's bytes read again,
	// which for the many dropped traces would cost as much as scanning
	// them did.
	sh.dOrphs += uint64(orphanSpans(t.Spans, &sh.ids))
	k := &Kept{
		ID:          b.id,
		SampleRate:  v.SampleRate,
		Reason:      v.Reason,
		DecidedAt:   sh.decidedAt(now),
		RootService: t.RootService(),
		RootName:    t.RootName(),
		Start:       t.Start(),
		DurationNs:  int64(t.Duration()),
		SpanCount:   len(t.Spans),
		HasError:    t.HasError(),
		Partial:     cause == causeSpans || prior != nil,
	}
	if prior != nil {
		// Kept on a later piece of a trace dropped at the span limit.
		delete(sh.cache.partial, b.id)
		k.Lost = prior.spans
		k.SpanCount += prior.spans
		sh.dFlipped++
		sh.dLost += uint64(prior.spans)
	}
	d := keptDecisionOf(k)
	sh.cache.addKept(b.id, &d)
	k.Spans = append([]Span(nil), t.Spans...)
	ownSpans(k.Spans, &b.id)
	sh.emit(ctx, k)
}

func (sh *shard) emit(ctx context.Context, k *Kept) {
	sh.dKept += uint64(len(k.Spans))
	sh.counted = true
	k.acct = &sh.s.keptBytes
	k.Hold(k.heldBytes())
	select {
	case sh.s.out <- k:
	case <-ctx.Done():
		// Shutting down before the archive took it: the spans stay
		// unsettled, so their offsets are not committed and Kafka
		// delivers them again.
		k.Hold(0)
	}
}

// flush decides every buffered trace now. Used at the end of a bounded run
// (tailsift demo) when the input is known to be complete.
func (sh *shard) flush(ctx context.Context, now time.Time) {
	for {
		b := sh.oldest()
		if b == nil {
			break
		}
		sh.decide(ctx, b, now, causeShutdown)
	}
	sh.byAge, sh.byAgeHead = sh.byAge[:0], 0
	for id, k := range sh.late {
		delete(sh.late, id)
		sh.emit(ctx, k)
	}
}

type quietEntry struct {
	due int64 // Unix nanoseconds
	r   traceRef
}

// quietHeap is a min-heap of traces by the time they become quiet. A trace
// has at most one entry; a span arriving after the entry was pushed does not
// move it: when it comes due the shard re-checks LastSeen and pushes again.
// Written out rather than through container/heap, whose calls through an
// interface for every comparison and swap were most of its cost.
type quietHeap []quietEntry

func (h *quietHeap) push(e quietEntry) {
	q := append(*h, e)
	i := len(q) - 1
	for i > 0 {
		p := (i - 1) / 2
		if q[p].due <= e.due {
			break
		}
		q[i] = q[p]
		i = p
	}
	q[i] = e
	*h = q
}

// pop removes and returns the earliest entry; h must not be empty.
func (h *quietHeap) pop() quietEntry {
	q := *h
	top := q[0]
	n := len(q) - 1
	e := q[n]
	q = q[:n]
	i := 0
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if r := c + 1; r < n && q[r].due < q[c].due {
			c = r
		}
		if e.due <= q[c].due {
			break
		}
		q[i] = q[c]
		i = c
	}
	if n > 0 {
		q[i] = e
	}
	*h = q
	return top
}

// decidedAt is the wall-clock time of a decision made at completion time now.
func (sh *shard) decidedAt(now time.Time) time.Time {
	if sh.wall.IsZero() {
		return now // driven by hand, as in tests
	}
	return sh.wall
}
