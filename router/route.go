package router

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"google.golang.org/protobuf/encoding/protowire"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tailsift/tailsift/internal/otlpwire"
	"github.com/tailsift/tailsift/sampler"
)

// Ring tells which node owns a trace. Implementations must be safe for
// concurrent use and fast: Owner runs once per span.
type Ring interface {
	// Owner returns the node that owns id, and whether it is this node.
	Owner(id *sampler.TraceID) (node string, local bool)
	// Has reports whether node is a member of the ring.
	Has(node string) bool
}

// Transport moves encoded span batches to other nodes. If it also has a
// method MaxBatchBytes() int, Route keeps every batch within it.
type Transport interface {
	// Send returns once the peer holds batch; the peer acknowledges seq
	// later, when every span in it reached a final state there.
	Send(ctx context.Context, to string, batch []byte, seq uint64) error
}

// Route is the Dispatcher in front of the local sampler in a cluster: spans
// whose trace this node owns go to the local sampler, the rest are batched
// per owner and sent there.
//
// A forwarded span stays unsettled (its Kafka offset uncommitted) until the
// owner acknowledges the batch. Route keeps each unacknowledged batch's
// items; when the owner leaves the ring, or a send fails, they are routed
// again to whoever owns them now. Nothing a peer did not acknowledge is
// forgotten, so a node dying loses no span.
type Route struct {
	local Dispatcher
	tr    Transport
	log   *slog.Logger
	m     *RouteMetrics

	ring atomic.Pointer[ringBox]
	seq  atomic.Uint64

	ackTimeout atomic.Int64 // nanoseconds; see SetAckTimeout

	mu       sync.Mutex
	inflight map[uint64]*flight // by batch sequence number
	orphans  []sampler.Item     // failed sends, routed again by Run

	localBuf []sampler.Item
	perPeer  map[string][]sampler.Item
	encBuf   []byte
	peerCap  map[string]int // per peer, a lower cap after a refused or failed batch
}

type ringBox struct{ r Ring }

type flight struct {
	to    string
	items []sampler.Item
	sent  time.Time
}

// NewRoute returns a Route with no ring: until SetRing, every span is local.
func NewRoute(local Dispatcher, tr Transport, m *RouteMetrics, log *slog.Logger) *Route {
	if m == nil {
		m = NewRouteMetrics(nil)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Route{local: local, tr: tr, m: m, log: log, inflight: make(map[uint64]*flight), perPeer: make(map[string][]sampler.Item)}
	r.ackTimeout.Store(int64(DefaultAckTimeout))
	// Sequence numbers start at a random point, so a restarted process
	// does not reuse one its previous incarnation sent (a peer still
	// holding the old batch would acknowledge it to the new process,
	// settling a different batch that is not yet safe), and nobody can
	// guess one to acknowledge a batch its owner never settled.
	r.seq.Store(randomSeq())
	return r
}

// randomSeq returns a random 64-bit start for sequence numbers. Adding
// to it wraps around in 2^64 sends, which never come.
func randomSeq() uint64 {
	var b [8]byte
	rand.Read(b[:]) // never fails (Go 1.24)
	return binary.BigEndian.Uint64(b[:])
}

// DefaultAckTimeout is how long a forwarded batch may wait for its
// acknowledgement before it is routed again, unless SetAckTimeout says
// otherwise.
const DefaultAckTimeout = 10 * time.Minute

// SetAckTimeout sets how long a forwarded batch may go unacknowledged
// before its spans are routed again. An owner acknowledges once the spans
// are dropped or durable, so this must exceed the longest a healthy owner
// takes (sampler.max_wait plus archive.roll_age, plus any watermark hold).
// It is what recovers spans sent to a peer that died and came back under
// the same name before the others saw it go: the new process never
// acknowledges the old one's batches, and the ring never drops the name.
// Too short a timeout only costs duplicates.
func (r *Route) SetAckTimeout(d time.Duration) { r.ackTimeout.Store(int64(d)) }

// Add implements Dispatcher. It is called by one goroutine at a time (the
// poll loop, or Run re-routing): its buffers are not shared.
func (r *Route) Add(ctx context.Context, items []sampler.Item) error {
	box := r.ring.Load()
	if box == nil {
		return r.local.Add(ctx, items)
	}
	local := r.localBuf[:0]
	for i := range items {
		node, isLocal := box.r.Owner(&items[i].TraceID)
		if isLocal {
			local = append(local, items[i])
			continue
		}
		r.perPeer[node] = append(r.perPeer[node], items[i])
	}
	r.localBuf = local
	if len(local) > 0 {
		if err := r.local.Add(ctx, local); err != nil {
			return err
		}
		clear(local)
	}
	for node, its := range r.perPeer {
		if len(its) == 0 {
			continue
		}
		err := r.send(ctx, node, its)
		clear(its)
		r.perPeer[node] = its[:0]
		if err != nil {
			return err
		}
	}
	return nil
}

// DefaultMaxBatchBytes bounds a forwarded batch when the Transport states
// no limit of its own: the cluster transport's default.
const DefaultMaxBatchBytes = 64 << 20

// minBatchCap is as low as a peer's cap goes after failed sends: small
// enough for a peer configured with a far lower limit, large enough that
// a few successes bring it back.
const minBatchCap = 4 << 10

// send forwards items to node, in as many batches as the transport's
// limit and the peer's cap ask. On failure the items become orphans,
// routed again by Run; only ctx ending is an error.
//
// A batch over the limit is halved until it fits, however many spans
// arrived at once (a hand-off of a quarter of a node's buffer, or every
// orphan of a failed send routed again together). A batch the peer
// refused or failed to take lowers that peer's cap to half its size, so
// the spans go again in smaller batches rather than whole, forever; each
// success doubles the cap back towards the limit.
func (r *Route) send(ctx context.Context, node string, items []sampler.Item) error {
	r.encBuf = AppendBatch(r.encBuf[:0], items)
	if len(r.encBuf) > r.batchCap(node) && len(items) > 1 {
		h := len(items) / 2
		if err := r.send(ctx, node, items[:h]); err != nil {
			return err
		}
		return r.send(ctx, node, items[h:])
	}
	return r.sendBatch(ctx, node, items)
}

// batchCap is the largest batch to send node now.
func (r *Route) batchCap(node string) int {
	if c, ok := r.peerCap[node]; ok {
		return c
	}
	return r.maxBatch()
}

// maxBatch is the transport's limit on one batch.
func (r *Route) maxBatch() int {
	if l, ok := r.tr.(interface{ MaxBatchBytes() int }); ok && l.MaxBatchBytes() > 0 {
		return l.MaxBatchBytes()
	}
	return DefaultMaxBatchBytes
}

// sendBatch sends items, encoded in r.encBuf, as one batch.
func (r *Route) sendBatch(ctx context.Context, node string, items []sampler.Item) error {
	seq := r.seq.Add(1)
	fl := &flight{to: node, items: slices.Clone(items), sent: time.Now()}
	r.mu.Lock()
	r.inflight[seq] = fl
	r.mu.Unlock()
	err := r.tr.Send(ctx, node, r.encBuf, seq)
	if err == nil {
		if c, ok := r.peerCap[node]; ok {
			if c *= 2; c >= r.maxBatch() {
				delete(r.peerCap, node)
			} else {
				r.peerCap[node] = c
			}
		}
		r.m.forwardedSpans.Add(float64(len(items)))
		r.m.forwardedBytes.Add(float64(len(r.encBuf)))
		r.m.batches.Inc()
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	r.m.sendErrors.Inc()
	if r.peerCap == nil {
		r.peerCap = make(map[string]int)
	}
	r.peerCap[node] = max(min(r.batchCap(node), len(r.encBuf)/2), min(minBatchCap, r.maxBatch()))
	r.log.Warn("forwarding failed; spans will be routed again", "to", node, "spans", len(items), "bytes", len(r.encBuf), "err", err)
	r.mu.Lock()
	if f, ok := r.inflight[seq]; ok {
		delete(r.inflight, seq)
		r.orphans = append(r.orphans, f.items...)
	}
	r.mu.Unlock()
	return nil
}

// Acked settles the spans of batches that node acknowledged. Unknown
// sequence numbers (batches already routed elsewhere) are ignored.
func (r *Route) Acked(from string, seqs []uint64) {
	r.mu.Lock()
	var done []*flight
	for _, s := range seqs {
		if f, ok := r.inflight[s]; ok && f.to == from {
			delete(r.inflight, s)
			done = append(done, f)
		}
	}
	r.mu.Unlock()
	for _, f := range done {
		r.m.ackLatency.Observe(time.Since(f.sent).Seconds())
		for i := range f.items {
			if src := f.items[i].Span.Src; src != nil {
				src.Done()
			}
		}
	}
}

// PeerLost routes again, as soon as Run gets to them, the spans of every
// batch node has not acknowledged: the connection they went over broke,
// and a peer that died (even one already back under the same name) lost
// them with its memory. Waiting for the ack timeout instead would let the
// owner decide their traces without them, and drop the pieces it has, in
// the meantime. From now until they reach an owner they hold the
// watermark (OldestOrphan). If node is in fact alive, the cost is
// duplicates.
func (r *Route) PeerLost(node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for seq, f := range r.inflight {
		if f.to == node {
			delete(r.inflight, seq)
			r.orphans = append(r.orphans, f.items...)
			n += len(f.items)
		}
	}
	if n > 0 {
		r.log.Warn("connection to peer lost; routing its unacknowledged spans again", "to", node, "spans", n)
	}
}

// SetRing swaps the ring. Batches in flight to nodes that left it are
// routed again (by Run) to their new owners.
func (r *Route) SetRing(ring Ring) {
	r.ring.Store(&ringBox{ring})
	r.mu.Lock()
	defer r.mu.Unlock()
	for seq, f := range r.inflight {
		if !ring.Has(f.to) {
			delete(r.inflight, seq)
			r.orphans = append(r.orphans, f.items...)
		}
	}
}

// OldestOrphan returns the earliest record time (Pending.TS) of the spans
// waiting to be routed again, or 0 when none wait. Until they reach their
// owners, the watermark must not pass them.
func (r *Route) OldestOrphan() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var oldest int64
	for i := range r.orphans {
		if src := r.orphans[i].Span.Src; src != nil && src.TS > 0 && (oldest == 0 || src.TS < oldest) {
			oldest = src.TS
		}
	}
	return oldest
}

// InFlight is the number of forwarded batches not yet acknowledged.
func (r *Route) InFlight() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.inflight)
}

// expire makes orphans of the batches unacknowledged for longer than the
// ack timeout.
func (r *Route) expire(now time.Time) {
	limit := time.Duration(r.ackTimeout.Load())
	r.mu.Lock()
	defer r.mu.Unlock()
	for seq, f := range r.inflight {
		if now.Sub(f.sent) > limit {
			delete(r.inflight, seq)
			r.orphans = append(r.orphans, f.items...)
			r.m.ackTimeouts.Inc()
			r.log.Warn("forwarded batch not acknowledged in time; routing its spans again", "to", f.to,
				"spans", len(f.items), "sent", f.sent, "ack_timeout", limit)
		}
	}
}

// Reroute routes again every span forwarded but not acknowledged, as if the
// peers holding them had left. Used when this node hands off before exit.
func (r *Route) takeOrphans() []sampler.Item {
	r.mu.Lock()
	defer r.mu.Unlock()
	o := r.orphans
	r.orphans = nil
	return o
}

// Resend routes orphaned spans again. The owner of Add (the poll loop)
// calls it between polls, so Route's buffers keep a single user.
func (r *Route) Resend(ctx context.Context) error {
	r.expire(time.Now())
	o := r.takeOrphans()
	if len(o) == 0 {
		return nil
	}
	r.m.rerouted.Add(float64(len(o)))
	return r.Add(ctx, o)
}

// AppendBatch encodes items as an OTLP TracesData message: consecutive
// items sharing a *Scope go into one ResourceSpans/ScopeSpans, and every
// part is copied as the bytes it arrived in. The receiver reads it with
// the same scanner as a Kafka record.
func AppendBatch(dst []byte, items []sampler.Item) []byte {
	for i := 0; i < len(items); {
		sc := items[i].Span.Scope
		j := i + 1
		for j < len(items) && items[j].Span.Scope == sc {
			j++
		}
		dst = otlpwire.AppendResourceSpans(dst, sc.Resource, []byte(sc.ResourceSchemaURL), sc.Scope, []byte(sc.ScopeSchemaURL),
			func(yield func([]byte) bool) {
				for k := i; k < j; k++ {
					if !yield(items[k].Span.Raw) {
						return
					}
				}
			})
		i = j
	}
	// The newest record time of the batch, so the owner measures the
	// spans' quiet period in record time as the sender would. A field
	// number OTLP does not use: OTLP readers skip it.
	var ts int64
	for i := range items {
		if src := items[i].Span.Src; src != nil {
			ts = max(ts, src.TS)
		}
	}
	if ts > 0 {
		dst = protowire.AppendTag(dst, batchTSField, protowire.Fixed64Type)
		dst = protowire.AppendFixed64(dst, uint64(ts))
	}
	return dst
}

// batchTSField carries a forwarded batch's record time.
const batchTSField = 1000

// batchTS returns the record time AppendBatch stored in batch, or 0.
func batchTS(batch []byte) int64 {
	for len(batch) > 0 {
		num, typ, n := protowire.ConsumeTag(batch)
		if n < 0 {
			return 0
		}
		batch = batch[n:]
		if num == batchTSField && typ == protowire.Fixed64Type {
			v, _ := protowire.ConsumeFixed64(batch)
			return int64(v)
		}
		n = protowire.ConsumeFieldValue(num, typ, batch)
		if n < 0 {
			return 0
		}
		batch = batch[n:]
	}
	return 0
}

// Receiver takes batches forwarded by peers into the local sampler and
// acknowledges each once all its spans settled here.
type Receiver struct {
	local Dispatcher
	m     *RouteMetrics

	mu      sync.Mutex
	pending []received
	scan    sync.Pool
}

type received struct {
	from string
	seq  uint64
	p    *sampler.Pending
}

// NewReceiver returns a Receiver feeding local.
func NewReceiver(local Dispatcher, m *RouteMetrics) *Receiver {
	if m == nil {
		m = NewRouteMetrics(nil)
	}
	return &Receiver{local: local, m: m}
}

// errBadBatch is returned for a batch that is not valid OTLP.
var errBadBatch = errors.New("router: forwarded batch is not valid OTLP")

// Handle takes ownership of batch (its bytes are kept, not copied) and
// hands its spans to the local sampler. It may block (backpressure to the
// sending peer). Safe for concurrent use.
func (rc *Receiver) Handle(ctx context.Context, from string, batch []byte, seq uint64) error {
	sc, _ := rc.scan.Get().(*Scanner)
	if sc == nil {
		sc, _ = NewScanner(EncodingProto)
	}
	defer rc.scan.Put(sc)
	p := &sampler.Pending{TS: batchTS(batch)}
	items, err := sc.Scan(batch, p)
	if err != nil {
		rc.m.badBatches.Inc()
		return errors.Join(errBadBatch, err)
	}
	p.Add(len(items))
	rc.mu.Lock()
	rc.pending = append(rc.pending, received{from: from, seq: seq, p: p})
	rc.mu.Unlock()
	rc.m.receivedSpans.Add(float64(len(items)))
	return rc.local.Add(ctx, items)
}

// Run acknowledges settled batches every interval until ctx is done. ack
// failures are dropped: a peer that cannot be reached has left, and it
// routes its unacknowledged spans again itself.
func (rc *Receiver) Run(ctx context.Context, interval time.Duration, ack func(ctx context.Context, to string, seqs []uint64) error) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		rc.AckSettled(ctx, ack)
	}
}

// AckSettled acknowledges, once, every batch whose spans all settled. A
// node calls it a last time before it closes its transport, so peers do
// not route again spans it made durable.
func (rc *Receiver) AckSettled(ctx context.Context, ack func(ctx context.Context, to string, seqs []uint64) error) {
	byPeer := map[string][]uint64{}
	rc.mu.Lock()
	keep := rc.pending[:0]
	for _, r := range rc.pending {
		if r.p.Settled() {
			byPeer[r.from] = append(byPeer[r.from], r.seq)
		} else {
			keep = append(keep, r)
		}
	}
	clear(rc.pending[len(keep):])
	rc.pending = keep
	rc.mu.Unlock()
	for to, seqs := range byPeer {
		if err := ack(ctx, to, seqs); err != nil {
			rc.m.ackErrors.Inc()
		}
	}
}

// RouteMetrics are the forwarding metrics.
type RouteMetrics struct {
	forwardedSpans prometheus.Counter
	forwardedBytes prometheus.Counter
	batches        prometheus.Counter
	sendErrors     prometheus.Counter
	rerouted       prometheus.Counter
	receivedSpans  prometheus.Counter
	badBatches     prometheus.Counter
	ackErrors      prometheus.Counter
	ackLatency     prometheus.Histogram
	ackTimeouts    prometheus.Counter
}

// NewRouteMetrics creates the forwarding metrics and registers them with
// reg (nil: not registered).
func NewRouteMetrics(reg prometheus.Registerer) *RouteMetrics {
	m := &RouteMetrics{
		forwardedSpans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_router_forwarded_spans_total", Help: "Spans sent to the node owning their trace."}),
		forwardedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_router_forwarded_bytes_total", Help: "Encoded bytes of forwarded batches (before transport compression)."}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_router_forwarded_batches_total", Help: "Batches sent to peers."}),
		sendErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_router_forward_errors_total", Help: "Batches a peer did not take; their spans are routed again."}),
		rerouted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_router_rerouted_spans_total", Help: "Spans routed again after a failed send or a peer leaving."}),
		receivedSpans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_router_peer_spans_received_total", Help: "Spans received from peers."}),
		badBatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_router_peer_bad_batches_total", Help: "Peer batches rejected as malformed."}),
		ackErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_router_peer_ack_errors_total", Help: "Acknowledgements that could not be sent to a peer."}),
		ackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tailsift_router_forward_ack_seconds", Help: "Time from forwarding a batch to the owner acknowledging it (its spans settled).",
			Buckets: []float64{0.1, 0.5, 1, 2, 5, 10, 30, 60, 120}}),
		ackTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_router_forward_ack_timeouts_total", Help: "Forwarded batches not acknowledged within the ack timeout; their spans are routed again."}),
	}
	if reg != nil {
		reg.MustRegister(m.forwardedSpans, m.forwardedBytes, m.batches, m.sendErrors, m.rerouted,
			m.receivedSpans, m.badBatches, m.ackErrors, m.ackLatency, m.ackTimeouts)
	}
	return m
}
