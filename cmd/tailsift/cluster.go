package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tailsift/tailsift/cluster"
	"github.com/tailsift/tailsift/router"
	"github.com/tailsift/tailsift/sampler"
	"golang.org/x/sync/errgroup"
)

// clusterNode is what a node adds to join a cluster: gossip membership, the
// ring in front of the sampler, and the transport to peers.
//
// The Kafka consumer group and the gossip membership are two views of one
// cluster, kept consistent this way: a node is in the ring (owns traces)
// from the moment it joins gossip until it leaves it, whether or not the
// group gave it partitions; spans reach owners through the ring whatever
// partition they came from. What makes decisions safe while the two views
// disagree — a member dead in one and not yet in the other — is the
// watermark: nodes gossip how far they read each partition, and a
// partition nobody alive reports holds every decision back.
type clusterNode struct {
	id  string
	log *slog.Logger
	smp *sampler.Sampler
	wm  *router.Watermarks
	rc  *router.Receiver
	tr  *cluster.Transport
	ms  atomic.Pointer[cluster.Membership] // set once joined; read by the gossip loops that start before
	cfg cluster.Config

	mu    sync.Mutex // serializes Route.Add and Resend: the Route's buffers have one user at a time
	route *router.Route

	ctx     context.Context // for hand-offs on membership changes
	ring    atomic.Pointer[cluster.Ring]
	last    map[string]string
	onRing  func(r *cluster.Ring) // after each membership change
	leaving bool

	// hold is the watermark, in unix nanoseconds, when the ring last
	// changed, kept until this node has handed the traces it no longer owns
	// to their owners (0: none pending). The new owners measure quiet
	// periods by the watermark; held there, they do not decide the pieces
	// they received since the change before the rest of the trace arrives.
	hold atomic.Int64

	// sampling is set once the sampler runs. Until then it buffers
	// nothing, so there is nothing to hand off, and a hand-off would wait
	// for it: the membership's notifier must never block on a component
	// that has not started.
	sampling atomic.Bool
	insecure bool // no cluster key

	// leaveHold is the watermark, in unix nanoseconds, this node reports
	// for every partition while it leaves (0: not leaving).
	leaveHold atomic.Int64

	// seal makes this node's decided spans durable now (the archive's
	// Seal); peers ask for it while they settle revoked partitions.
	seal     func(ctx context.Context) error
	sealing  atomic.Bool  // a seal asked by a peer is running
	sealAsk  atomic.Int64 // when this node last asked its peers, unix nanos
	addrsMu  sync.Mutex
	addrs    map[string]string // last known forward address of every node seen
	retryMu  sync.Mutex
	retry    []sampler.KeptDecision // kept decisions not yet delivered, sent again
	retryAge time.Time              // when the oldest of them first failed
}

// handler is what the transport delivers to: batches to the receiver, acks
// to the route, kept decisions to the sampler.
type handler struct {
	*router.Receiver
	*router.Route
	smp *sampler.Sampler
}

// HandleDecisions adopts the kept decisions a peer hands over after a ring
// change, for the traces this node now owns.
func (h *handler) HandleDecisions(ctx context.Context, from string, payload []byte) error {
	ds, err := sampler.DecodeDecisions(payload)
	if err != nil {
		return fmt.Errorf("decisions from %s: %w", from, err)
	}
	return h.smp.AdoptDecisions(ctx, ds)
}

func newClusterNode(c ClusterConfig, id string, smp *sampler.Sampler, wm *router.Watermarks, reg prometheus.Registerer, log *slog.Logger) (*clusterNode, error) {
	key, err := readClusterKey(c.SecretKeyFile)
	if err != nil {
		return nil, err
	}
	cn := &clusterNode{id: id, log: log.With("component", "cluster"), smp: smp, wm: wm, insecure: len(key) == 0}
	rm := router.NewRouteMetrics(reg)
	cn.rc = router.NewReceiver(smp, rm)
	h := &handler{Receiver: cn.rc, smp: smp}
	cn.tr, err = cluster.NewTransport(cluster.TransportConfig{
		NodeID: id, ListenAddr: c.ForwardAddr, SecretKey: key, Logger: cn.log, MaxBatchBytes: c.MaxBatchBytes,
		Metrics: cluster.NewTransportMetrics(reg),
		Resolve: cn.resolve,
	}, h)
	if err != nil {
		return nil, fmt.Errorf("cluster.forward_addr: %w", err)
	}
	cn.route = router.NewRoute(smp, cn.tr, rm, cn.log)
	h.Route = cn.route
	wm.SetFloor(cn.floor)
	cn.cfg = cluster.Config{NodeID: id, GossipAddr: c.GossipAddr, ForwardAddr: c.ForwardAddr, Join: c.Join,
		SecretKey: key, Logger: cn.log, OnMessage: cn.onMessage}
	return cn, nil
}

// enabled reports whether any cluster setting is given.
func (c ClusterConfig) enabled() bool {
	return c.GossipAddr != "" || c.ForwardAddr != "" || len(c.Join) > 0
}

// validate checks the cluster settings (not the key file's content: see
// readClusterKey). A cluster is closed by default: without a key, anyone
// who reaches its ports is a member, owns a share of the traces and can
// acknowledge batches it never archived, so running one keyless takes an
// explicit cluster.insecure.
func (c ClusterConfig) validate() error {
	if !c.enabled() {
		return nil
	}
	var errs []error
	if c.GossipAddr == "" {
		errs = append(errs, errors.New("cluster.gossip_addr: required with cluster.forward_addr or cluster.join (host:port to gossip on)"))
	}
	if c.ForwardAddr == "" {
		errs = append(errs, errors.New("cluster.forward_addr: required with cluster.gossip_addr (host:port peers forward spans to)"))
	}
	if c.SecretKeyFile == "" && !c.Insecure {
		errs = append(errs, errors.New("cluster.secret_key_file: required for a cluster (--cluster-secret-key-file, a file of 16, 24 or 32 bytes, the same on every node): "+
			"without it anyone who can reach the gossip or forward port joins the cluster and takes traces; "+
			"on a network where every host is trusted, set cluster.insecure (--insecure-cluster) instead"))
	}
	return errors.Join(errs...)
}

// insecureWarning is logged at start and every insecureWarnEvery by a
// cluster node without a key.
const (
	insecureWarning   = "CLUSTER IS INSECURE (cluster.insecure, no cluster.secret_key_file): anyone who can reach the gossip and forward ports can join the cluster, take a share of the traces, inject spans and acknowledge batches it never archived"
	insecureWarnEvery = 5 * time.Minute
)

// readClusterKey reads the shared cluster key; an empty file name means no
// key.
func readClusterKey(file string) ([]byte, error) {
	if file == "" {
		return nil, nil
	}
	k, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("cluster.secret_key_file: %w", err)
	}
	key := bytes.TrimSpace(k)
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("cluster.secret_key_file: the key must be 16, 24 or 32 bytes, got %d", n)
	}
	return key, nil
}

// resolve returns a node's forward address: as gossip knows it now or,
// for a node that just left gossip but is still in the ring a sender
// routes by (its leave is being handed over), as it was last known. A
// leaving node still serves until its archive drained.
func (cn *clusterNode) resolve(n string) (string, bool) {
	if ms := cn.ms.Load(); ms != nil {
		if a, ok := ms.ForwardAddr(n); ok {
			return a, true
		}
	}
	cn.addrsMu.Lock()
	defer cn.addrsMu.Unlock()
	a, ok := cn.addrs[n]
	return a, ok
}

// floor is the earliest record time of spans this node read or received
// but has not yet handed to their owners: routed again after a failed send,
// set aside by the sampler for another owner, or waiting for a hand-off.
// The watermark stops before it (router.Watermarks.SetFloor).
func (cn *clusterNode) floor() int64 {
	var low int64
	for _, v := range []int64{cn.route.OldestOrphan(), cn.smp.OldestAside(), cn.hold.Load()} {
		if v > 0 && (low == 0 || v < low) {
			low = v
		}
	}
	return low
}

// Add implements router.Dispatcher for the consumer.
func (cn *clusterNode) Add(ctx context.Context, items []sampler.Item) error {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.route.Add(ctx, items)
}

// join starts gossip. It gives up when ctx (the signal context) ends;
// handCtx bounds the hand-offs made on membership changes.
func (cn *clusterNode) join(ctx, handCtx context.Context) error {
	cn.ctx = handCtx
	ms, err := cluster.JoinContext(ctx, cn.cfg, cn.onChange)
	if err != nil {
		return err
	}
	cn.ms.Store(ms)
	cn.log.Info("joined the cluster", "gossip_addr", ms.GossipAddr(), "members", len(ms.Members()))
	return nil
}

// onChange rebuilds the ring and hands the traces this node buffers but no
// longer owns to their new owners. It runs on the membership's notifier
// goroutine, one change at a time.
func (cn *clusterNode) onChange(members map[string]string) {
	cn.mu.Lock()
	leaving := cn.leaving
	cn.mu.Unlock()
	if leaving {
		return // the ring without this node is already in place
	}
	ids := slices.Sorted(maps.Keys(members))
	ring := cluster.NewRing(cn.id, ids)
	// The sampler learns first, so from now on it decides only what the
	// new ring gives this node, and routing follows.
	if at := cn.wm.Now().UnixNano(); at > 0 {
		cn.hold.Store(at)
	}
	defer cn.hold.Store(0)
	cn.ring.Store(ring) // for the decisions the sampler sets aside
	cn.smp.SetOwner(func(id *sampler.TraceID) bool { _, local := ring.Owner(id); return local })
	cn.route.SetRing(ring)
	for n := range cn.last {
		if _, ok := members[n]; !ok {
			cn.tr.Forget(n)
			cn.wm.Forget(n)
		}
	}
	cn.last = members
	cn.addrsMu.Lock()
	if cn.addrs == nil {
		cn.addrs = make(map[string]string)
	}
	maps.Copy(cn.addrs, members)
	cn.addrsMu.Unlock()
	if cn.onRing != nil {
		cn.onRing(ring)
	}
	cn.log.Info("cluster changed", "members", ids)
	cn.handoff()
}

// handoff moves the buffered traces this node no longer owns to their
// owners, and the decisions it made for kept ones.
func (cn *clusterNode) handoff() {
	if !cn.sampling.Load() {
		return
	}
	items, err := cn.smp.Handoff(cn.ctx)
	if err != nil {
		return
	}
	cn.sendDecisions(cn.ctx)
	if len(items) == 0 {
		return
	}
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if err := cn.route.Add(cn.ctx, items); err != nil {
		cn.log.Warn("hand-off interrupted; the spans will be read again from Kafka", "spans", len(items), "err", err)
		return
	}
	cn.log.Info("handed traces to their new owners", "spans", len(items))
}

// decisionsPerMessage bounds one decisions message to about a megabyte.
const decisionsPerMessage = 10_000

// sendDecisions sends the kept decisions the sampler set aside to the
// owners of their traces, so late spans reaching an owner are archived
// under the decision already made rather than decided alone (a split
// trace). What fails (an owner unreachable, or not yet known to this
// node's gossip) is sent again at the next call, to whoever owns the trace
// then, for up to decisionRetry.
func (cn *clusterNode) sendDecisions(ctx context.Context) {
	ring := cn.ring.Load()
	if ring == nil {
		return
	}
	ds := cn.smp.TakeAsideDecisions()
	cn.retryMu.Lock()
	if len(cn.retry) > 0 {
		if time.Since(cn.retryAge) > decisionRetry {
			cn.log.Warn("kept decisions not delivered in time; late spans of those traces will be decided by their owner alone",
				"decisions", len(cn.retry), "tried_for", decisionRetry)
		} else {
			ds = append(ds, cn.retry...)
		}
		cn.retry = nil
	}
	cn.retryMu.Unlock()
	if len(ds) == 0 {
		return
	}
	byOwner := make(map[string][]sampler.KeptDecision)
	for i := range ds {
		owner, _ := ring.Owner(&ds[i].ID)
		byOwner[owner] = append(byOwner[owner], ds[i])
	}
	for owner, part := range byOwner {
		if owner == cn.id {
			// The ring came back here before they left.
			if err := cn.smp.AdoptDecisions(ctx, part); err != nil {
				cn.retryLater(part)
			}
			continue
		}
		for c := range slices.Chunk(part, decisionsPerMessage) {
			if err := cn.tr.SendDecisions(ctx, owner, sampler.AppendDecisions(nil, c)); err != nil {
				cn.log.Info("handing kept decisions to their traces' owner failed; retrying",
					"node", owner, "decisions", len(c), "err", err)
				cn.retryLater(c)
				continue
			}
			cn.log.Info("handed kept decisions to their traces' owner", "node", owner, "decisions", len(c))
		}
	}
}

// decisionRetry is how long a kept decision is sent again: past a member's
// session timeout and a ring change or two, its owner is gone for good.
const decisionRetry = 2 * time.Minute

// retryLater queues kept decisions for the next sendDecisions.
func (cn *clusterNode) retryLater(ds []sampler.KeptDecision) {
	cn.retryMu.Lock()
	defer cn.retryMu.Unlock()
	if len(cn.retry) == 0 {
		cn.retryAge = time.Now()
	}
	cn.retry = append(cn.retry, ds...)
}

// pendingDecisions is the number of kept decisions waiting to be sent again.
func (cn *clusterNode) pendingDecisions() int {
	cn.retryMu.Lock()
	defer cn.retryMu.Unlock()
	return len(cn.retry)
}

// run serves peers, acknowledges their batches, re-routes what failed and
// gossips watermarks, until ctx is done.
func (cn *clusterNode) run(ctx context.Context, g *errgroup.Group) {
	if cn.insecure {
		g.Go(func() error {
			t := time.NewTicker(insecureWarnEvery)
			defer t.Stop()
			for {
				cn.log.Warn(insecureWarning)
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
				}
			}
		})
	}
	g.Go(func() error { return cn.tr.Serve(ctx) })
	g.Go(func() error { return cn.rc.Run(ctx, 200*time.Millisecond, cn.tr.Ack) })
	g.Go(func() error {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
			if err := cn.reroute(ctx); err != nil && ctx.Err() == nil {
				cn.log.Warn("re-routing failed", "err", err)
			}
			cn.sendDecisions(ctx)
			if ms := cn.ms.Load(); ms != nil {
				ms.Broadcast(cn.watermarkReport())
			}
		}
	})
}

// reroute sends on what reached this node but belongs elsewhere: spans the
// sampler set aside for traces another node owns (from a peer whose ring
// was behind, or read just before a ring change), and forwarded batches
// that failed or whose owner left.
func (cn *clusterNode) reroute(ctx context.Context) error {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if items := cn.smp.TakeAside(); len(items) > 0 {
		if err := cn.route.Add(ctx, items); err != nil {
			return err
		}
	}
	return cn.route.Resend(ctx)
}

// leave takes this node out of the cluster for a graceful shutdown: peers
// stop routing to it, and its buffered traces go to their new owners.
// It waits, at most until ctx ends, for the owners to settle them.
func (cn *clusterNode) leave(ctx context.Context) {
	if cn.ms.Load() == nil {
		return
	}
	cn.mu.Lock()
	cn.leaving = true
	cn.mu.Unlock()
	var others []string
	for n := range cn.ms.Load().Members() {
		if n != cn.id {
			others = append(others, n)
		}
	}
	// The peers stop routing here as soon as they hear of the leave; from
	// that moment the traces buffered here belong to them, so this node
	// decides nothing more: what comes due is set aside for them.
	if len(others) == 0 {
		if err := cn.ms.Load().Leave(leaveTimeout(ctx)); err != nil {
			cn.log.Warn("leaving gossip", "err", err)
		}
		return // the last node: decide here, as a single node does
	}
	cn.smp.SetOwner(func(*sampler.TraceID) bool { return false })
	// This node left the consumer group first, so the others read its
	// partitions on and the watermark moves: until they hear of the
	// leave, it holds every partition where the watermark is now, so no
	// new owner decides a trace before the pieces buffered here reach it.
	cn.leaveHold.Store(cn.wm.Now().UnixNano())
	cn.ms.Load().Broadcast(cn.watermarkReport())
	ring := cluster.NewRing(cn.id, others) // a node not in the ring owns nothing
	cn.ring.Store(ring)
	cn.route.SetRing(ring)
	cn.handoff()
	// Handed over before the peers drop this node (and its hold): what
	// they get before their ring changes, they set aside, holding the
	// watermark themselves, and keep once it has.
	if err := cn.ms.Load().Leave(leaveTimeout(ctx)); err != nil {
		// The peers learn it from failure detection instead, seconds
		// later; until then they route here and this node passes on.
		cn.log.Warn("leaving gossip", "err", err)
	}
	// Until every span set aside has reached an owner and every forwarded
	// batch is acknowledged: a span left unsettled here holds back the
	// commit of its whole record, whose other traces are then read again
	// and decided a second time by their owners.
	for ctx.Err() == nil {
		cn.reroute(ctx)
		cn.sendDecisions(ctx)
		// The new owners acknowledge once the spans are durable: they
		// seal their files now rather than at their roll age.
		cn.askSeal()
		if cn.route.InFlight() == 0 && cn.smp.AsideSpans() == 0 && cn.pendingDecisions() == 0 {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	cn.log.Info("left the cluster", "unacknowledged_batches", cn.route.InFlight())
}

// leaveTimeout is how long a leave waits for gossip to carry its
// broadcast: a third of what remains of ctx, from 2 to 10 seconds. A
// busy machine may take seconds to send it, and peers that miss it keep
// routing here until failure detection removes this node.
func leaveTimeout(ctx context.Context) time.Duration {
	d := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl)/3)
	}
	return max(d, 2*time.Second)
}

func (cn *clusterNode) close() {
	// The archive drained: acknowledge what it made durable, or the
	// senders route it again once the connection drops.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	cn.rc.AckSettled(ctx, cn.tr.Ack)
	cancel()
	if ms := cn.ms.Load(); ms != nil {
		ms.Shutdown()
	}
	cn.tr.Close()
}

// watermarkReport is this node's watermark report for its peers: the
// partitions it reads or, while it leaves, every partition held at
// leaveHold.
func (cn *clusterNode) watermarkReport() []byte {
	parts := cn.wm.Partitions()
	if h := cn.leaveHold.Load(); h > 0 {
		parts = make(map[int32]int64)
		for p := range cn.wm.Count() {
			parts[p] = h
		}
	}
	return encodeWatermarks(cn.id, parts, time.Now().UnixNano())
}

// Watermark reports: 'W', version 1, node ID, time, then partition and
// watermark pairs, all varints. A report fits one gossip packet for
// hundreds of partitions.
func encodeWatermarks(node string, parts map[int32]int64, at int64) []byte {
	b := []byte{'W', 1}
	b = binary.AppendUvarint(b, uint64(len(node)))
	b = append(b, node...)
	b = binary.AppendVarint(b, at)
	b = binary.AppendUvarint(b, uint64(len(parts)))
	for p, v := range parts {
		b = binary.AppendVarint(b, int64(p))
		b = binary.AppendVarint(b, v)
	}
	return b
}

func decodeWatermarks(b []byte) (node string, parts map[int32]int64, at int64, err error) {
	bad := errors.New("malformed watermark report")
	if len(b) < 2 || b[0] != 'W' || b[1] != 1 {
		return "", nil, 0, bad
	}
	b = b[2:]
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return "", nil, 0, bad
	}
	node, b = string(b[k:k+int(n)]), b[k+int(n):]
	at, k = binary.Varint(b)
	if k <= 0 {
		return "", nil, 0, bad
	}
	b = b[k:]
	cnt, k := binary.Uvarint(b)
	if k <= 0 || cnt > 1<<16 {
		return "", nil, 0, bad
	}
	b = b[k:]
	parts = make(map[int32]int64, cnt)
	for range cnt {
		p, k1 := binary.Varint(b)
		if k1 <= 0 {
			return "", nil, 0, bad
		}
		v, k2 := binary.Varint(b[k1:])
		if k2 <= 0 {
			return "", nil, 0, bad
		}
		parts[int32(p)] = v
		b = b[k1+k2:]
	}
	return node, parts, at, nil
}

// Seal requests: 'S', version 1, node ID. A node settling revoked Kafka
// partitions asks every peer to seal its archive files, since the spans it
// forwarded settle only once durable at their owners.
func encodeSealRequest(node string) []byte {
	b := []byte{'S', 1}
	b = binary.AppendUvarint(b, uint64(len(node)))
	return append(b, node...)
}

func decodeSealRequest(b []byte) (node string, ok bool) {
	if len(b) < 2 || b[0] != 'S' || b[1] != 1 {
		return "", false
	}
	n, k := binary.Uvarint(b[2:])
	if k <= 0 || uint64(len(b)-2-k) != n {
		return "", false
	}
	return string(b[2+k:]), true
}

// askSeal asks the peers, at most every sealAskInterval, to seal their
// archive files.
func (cn *clusterNode) askSeal() {
	now := time.Now().UnixNano()
	last := cn.sealAsk.Load()
	if cn.ms.Load() == nil || now-last < int64(sealAskInterval) || !cn.sealAsk.CompareAndSwap(last, now) {
		return
	}
	cn.ms.Load().Broadcast(encodeSealRequest(cn.id))
}

// sealAskInterval spaces seal requests: each one closes every peer's open
// files, and a short rebalance needs only a few.
const sealAskInterval = 500 * time.Millisecond

// onSealRequest seals this node's archive files for a peer, one seal at a
// time; requests arriving meanwhile are served by it.
func (cn *clusterNode) onSealRequest(from string) {
	if cn.seal == nil || !cn.sealing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer cn.sealing.Store(false)
		ctx, cancel := context.WithTimeout(cn.ctx, 10*time.Second)
		defer cancel()
		if err := cn.seal(ctx); err != nil && ctx.Err() == nil {
			cn.log.Warn("sealing archive files for a peer", "node", from, "err", err)
		}
	}()
}

func (cn *clusterNode) onMessage(msg []byte) {
	if node, ok := decodeSealRequest(msg); ok {
		if node != cn.id {
			cn.onSealRequest(node)
		}
		return
	}
	node, parts, at, err := decodeWatermarks(msg)
	if err != nil || node == cn.id {
		return
	}
	cn.wm.Report(node, parts, at)
}
