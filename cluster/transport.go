package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tailsift/tailsift/router"
)

var _ router.Transport = (*Transport)(nil)

// Handler receives what peers send. In tailsift it is
// struct{ *router.Receiver; *router.Route }: the Receiver takes batches,
// the Route settles the batches this node forwarded once their owner acks.
type Handler interface {
	// Handle takes ownership of batch. It may block: that is the
	// backpressure on the sending peer. Its error goes back to the sender,
	// whose Send fails. Called from one goroutine per peer connection.
	Handle(ctx context.Context, from string, batch []byte, seq uint64) error
	// Acked reports that node from settled the batches this node sent it
	// with sequence numbers seqs. It must not block for long.
	Acked(from string, seqs []uint64)
	// PeerLost reports that the connection this node sent batches to node
	// over broke. node may have lost every batch it held and had not yet
	// acknowledged (a process that dies closes its connections, and one
	// that comes back under the same name knows nothing of them), so those
	// batches must not be counted on. It must not block for long.
	PeerLost(node string)
}

// DecisionsHandler is implemented by a Handler that takes the kept
// decisions peers hand over after a ring change (SendDecisions). Without
// it, such requests are refused and the sender logs it.
type DecisionsHandler interface {
	// HandleDecisions takes ownership of payload, the encoding of the
	// decisions. Its error goes back to the sender.
	HandleDecisions(ctx context.Context, from string, payload []byte) error
}

// TransportConfig configures a Transport.
type TransportConfig struct {
	// NodeID is this node's name in the ring; peers address it by it.
	// Required, at most 255 bytes.
	NodeID string
	// ListenAddr is the host:port to accept peers on. Port 0 picks a free
	// port (see Addr). Required.
	ListenAddr string
	// SecretKey, when set, must be the same on every node: a peer that
	// cannot prove it holds the key (HMAC-SHA256 challenge/response) is
	// refused, in both directions. At least 16 bytes. It authenticates
	// the connection, it does not encrypt it: on an untrusted network run
	// the cluster over a private network or VPN.
	SecretKey []byte
	// Resolve returns the forwarding address of a node, usually
	// (*Membership).ForwardAddr. Required.
	Resolve func(node string) (addr string, ok bool)
	// Logger receives connection events. Default: discard.
	Logger *slog.Logger
	// Metrics, when set, counts traffic. Default: unregistered metrics.
	Metrics *TransportMetrics
	// MaxInFlight is how many requests may wait for a receipt per peer;
	// further Sends block. It bounds the memory a slow peer can pin here
	// and the work queued at it. Default 8.
	MaxInFlight int
	// SendTimeout bounds how long Send waits for the peer's receipt (and
	// how long a frame write may take). Past it Send fails and the router
	// routes the batch again. Default 30s.
	SendTimeout time.Duration
	// DialTimeout bounds connecting to a peer, handshake included.
	// Default 5s.
	DialTimeout time.Duration
	// MaxBatchBytes is the largest batch accepted, uncompressed. Larger
	// ones are refused by the sender and the receiver. Default 64 MiB.
	MaxBatchBytes int
	// HandshakeTimeout bounds how long an inbound connection may take to
	// authenticate; past it the connection is closed. A peer needs a few
	// round trips, so it is short: what holds a connection open without
	// the key is held no longer than this. Default 3s.
	HandshakeTimeout time.Duration
	// MaxConns caps inbound connections, authenticated or not; one more
	// is closed at once. A peer keeps one connection to this node, so
	// the default of 1024 leaves room for large clusters.
	MaxConns int
	// MaxPendingConns caps inbound connections still in the handshake;
	// one more is closed at once. Peers authenticate in two round trips,
	// so only a burst of (re)connecting nodes comes close. It bounds
	// what anyone who can reach the port can make this node hold
	// without the key. Default 64.
	MaxPendingConns int

	// noCompression sends batches raw (benchmarks compare both).
	noCompression bool
}

func (c *TransportConfig) applyDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = NewTransportMetrics(nil)
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 8
	}
	if c.SendTimeout == 0 {
		c.SendTimeout = 30 * time.Second
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = 64 << 20
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 3 * time.Second
	}
	if c.MaxConns == 0 {
		c.MaxConns = 1024
	}
	if c.MaxPendingConns == 0 {
		c.MaxPendingConns = 64
	}
}

func (c *TransportConfig) validate() error {
	var errs []string
	if c.NodeID == "" || len(c.NodeID) > 255 {
		errs = append(errs, fmt.Sprintf("cluster.node_id: must be 1..255 bytes, got %q", c.NodeID))
	}
	if c.ListenAddr == "" {
		errs = append(errs, "cluster.forward_addr: required (host:port)")
	}
	if n := len(c.SecretKey); n > 0 && n < 16 {
		errs = append(errs, fmt.Sprintf("cluster.secret_key: must be at least 16 bytes, got %d", n))
	}
	if c.Resolve == nil {
		errs = append(errs, "cluster: TransportConfig.Resolve is required")
	}
	if c.MaxInFlight < 1 {
		errs = append(errs, "cluster.max_in_flight: must be at least 1")
	}
	if c.MaxConns < 1 || c.MaxPendingConns < 1 {
		errs = append(errs, "cluster: connection caps must be at least 1")
	}
	if c.SendTimeout < 0 || c.DialTimeout < 0 || c.HandshakeTimeout < 0 {
		errs = append(errs, "cluster: timeouts must be positive")
	}
	if c.MaxBatchBytes < 1<<10 || c.MaxBatchBytes > 1<<30 {
		errs = append(errs, fmt.Sprintf("cluster.max_batch_bytes: must be 1KiB..1GiB, got %d", c.MaxBatchBytes))
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// Reconnect backoff: after a failed dial, Sends to that peer fail at once
// (the router routes their spans again) until the backoff passes, so a
// dead peer costs no dial per batch. It doubles per failure up to the cap,
// which is short because membership removes a dead node within seconds
// anyway, and a restarted one should be reachable again quickly.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// ErrClosed is returned by a Transport after Close.
var ErrClosed = errors.New("cluster: transport closed")

// Transport moves span batches between nodes over TCP, one persistent
// connection per peer in each direction: this node's requests (batches,
// acks) go out on connections it dialed, and peers' requests come in on
// connections Serve accepted. Batches are s2-compressed. Delivery is at
// least once: a batch whose receipt was lost with its connection is sent
// again by the router.
//
// Goroutines: one reader per outbound connection (delivers receipts), and
// under Serve one per inbound connection (reads requests, calls the
// Handler, writes receipts). Close joins them.
type Transport struct {
	cfg  TransportConfig
	h    Handler
	log  *slog.Logger
	m    *TransportMetrics
	ln   net.Listener
	bufs sync.Pool // *[]byte frame buffers for Send

	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup // outbound readers and Serve

	mu      sync.Mutex
	peers   map[string]*peer      // outbound, by node ID
	inbound map[net.Conn]struct{} // accepted connections, closed by Serve on exit
	pending int                   // of inbound, those not yet authenticated
	serving bool
}

// NewTransport validates cfg and listens on cfg.ListenAddr. Peers are
// served once Serve runs; Send works at once.
func NewTransport(cfg TransportConfig, h Handler) (*Transport, error) {
	cfg.applyDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("cluster: NewTransport needs a Handler")
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("cluster: listen for peers on %s: %w (is another node using the port?)", cfg.ListenAddr, err)
	}
	return &Transport{
		cfg:     cfg,
		h:       h,
		log:     cfg.Logger.With("component", "cluster.transport"),
		m:       cfg.Metrics,
		ln:      ln,
		closing: make(chan struct{}),
		peers:   make(map[string]*peer),
		inbound: make(map[net.Conn]struct{}),
	}, nil
}

// Addr is the address the Transport listens on, with the port chosen when
// ListenAddr had port 0.
func (t *Transport) Addr() string { return t.ln.Addr().String() }

// Close stops Serve, closes every connection and waits for the Transport's
// goroutines. Sends in flight fail. Safe to call more than once.
func (t *Transport) Close() error {
	t.closeOnce.Do(func() {
		t.mu.Lock()
		close(t.closing) // under mu: start and Serve check it there
		t.ln.Close()
		for _, p := range t.peers {
			p.close()
		}
		t.mu.Unlock()
	})
	t.wg.Wait()
	return nil
}

// MaxBatchBytes is the largest batch Send takes (TransportConfig.MaxBatchBytes).
func (t *Transport) MaxBatchBytes() int { return t.cfg.MaxBatchBytes }

// Send delivers batch to node to and returns once to's Handler accepted
// it. batch is not retained after Send returns. seq is passed to the
// peer's Handler and comes back in its Ack. An error (peer unreachable,
// refused, timed out) means the peer may not have the batch.
func (t *Transport) Send(ctx context.Context, to string, batch []byte, seq uint64) error {
	if len(batch) > t.cfg.MaxBatchBytes {
		return fmt.Errorf("cluster: batch of %d bytes for %s exceeds max_batch_bytes %d", len(batch), to, t.cfg.MaxBatchBytes)
	}
	if err := t.sendPayload(ctx, to, frameBatch, seq, batch); err != nil {
		return err
	}
	t.m.sentBatches.Inc()
	t.m.sentRawBytes.Add(float64(len(batch)))
	return nil
}

// SendDecisions delivers payload, kept decisions encoded by
// sampler.AppendDecisions, to node to and returns once to's
// DecisionsHandler took them. Unlike batches they are not acknowledged
// later nor sent again: a lost payload only means late spans of those
// traces are decided alone by their new owner.
func (t *Transport) SendDecisions(ctx context.Context, to string, payload []byte) error {
	if len(payload) > t.cfg.MaxBatchBytes {
		return fmt.Errorf("cluster: decisions of %d bytes for %s exceed max_batch_bytes %d", len(payload), to, t.cfg.MaxBatchBytes)
	}
	return t.sendPayload(ctx, to, frameDecisions, 0, payload)
}

// sendPayload sends one batch or decisions frame and waits for its receipt.
func (t *Transport) sendPayload(ctx context.Context, to string, typ byte, seq uint64, payload []byte) error {
	err := t.request(ctx, to, func(c *clientConn, id uint64) error {
		bp := t.getBuf()
		defer t.bufs.Put(bp)
		*bp = t.appendPayload((*bp)[:0], typ, id, seq, payload)
		if err := c.write(*bp, t.cfg.SendTimeout); err != nil {
			return err
		}
		t.m.sentBytes.Add(float64(len(*bp)))
		return nil
	})
	if err != nil {
		t.m.sendErrors.Inc()
	}
	return err
}

// Ack tells node to that this node settled the batches it sent with the
// given sequence numbers. It is the ack function of router.Receiver.Run.
func (t *Transport) Ack(ctx context.Context, to string, seqs []uint64) error {
	for len(seqs) > 0 {
		chunk := seqs[:min(len(seqs), maxAckSeqs)]
		seqs = seqs[len(chunk):]
		err := t.request(ctx, to, func(c *clientConn, id uint64) error {
			return c.write(appendAck(nil, id, chunk), t.cfg.SendTimeout)
		})
		if err != nil {
			t.m.sendErrors.Inc()
			return err
		}
	}
	return nil
}

// start runs fn on a goroutine Close waits for, unless Close began.
func (t *Transport) start(fn func()) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	select {
	case <-t.closing:
		return false
	default:
	}
	t.wg.Go(fn)
	return true
}

func (t *Transport) getBuf() *[]byte {
	if bp, ok := t.bufs.Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, 0, 64<<10)
	return &b
}

// appendPayload appends a frame of type typ (batch or decisions),
// compressing the payload unless that does not make it smaller.
func (t *Transport) appendPayload(dst []byte, typ byte, id, seq uint64, batch []byte) []byte {
	dst, st := beginFrame(dst, typ)
	dst = binary.BigEndian.AppendUint64(dst, id)
	dst = binary.BigEndian.AppendUint64(dst, seq)
	if !t.cfg.noCompression {
		hdr := len(dst) + 1
		dst = slices.Grow(dst, 1+s2.MaxEncodedLen(len(batch)))
		enc := s2.Encode(dst[hdr:cap(dst)], batch)
		if len(enc) < len(batch) {
			dst = append(dst, encS2)
			return endFrame(dst[:hdr+len(enc)], st)
		}
	}
	dst = append(dst, encRaw)
	dst = append(dst, batch...)
	return endFrame(dst, st)
}

// request sends one request to node to with write and waits for its
// receipt, SendTimeout or ctx.
func (t *Transport) request(ctx context.Context, to string, write func(c *clientConn, id uint64) error) error {
	if to == t.cfg.NodeID {
		return fmt.Errorf("cluster: BUG: send to self (%s)", to)
	}
	p, err := t.peer(to)
	if err != nil {
		return err
	}
	// Backpressure: at most MaxInFlight requests wait on one peer.
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-t.closing:
		return ErrClosed
	}
	defer func() { <-p.slots }()
	c, err := p.conn(ctx)
	if err != nil {
		return fmt.Errorf("cluster: send to %s: %w", to, err)
	}
	id := c.nextID.Add(1)
	done, err := c.register(id)
	if err != nil {
		return fmt.Errorf("cluster: send to %s: %w", to, err)
	}
	if err := write(c, id); err != nil {
		c.fail(err)
		return fmt.Errorf("cluster: send to %s: %w", to, err)
	}
	timer := time.NewTimer(t.cfg.SendTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("cluster: send to %s: %w", to, err)
		}
		return nil
	case <-ctx.Done():
		c.forget(id)
		return ctx.Err()
	case <-timer.C:
		c.forget(id)
		return fmt.Errorf("cluster: send to %s: no receipt within %v", to, t.cfg.SendTimeout)
	}
}

// peer returns the outbound state for node, creating it on first use.
func (t *Transport) peer(node string) (*peer, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	select {
	case <-t.closing:
		return nil, ErrClosed
	default:
	}
	p := t.peers[node]
	if p == nil {
		p = &peer{t: t, node: node, slots: make(chan struct{}, t.cfg.MaxInFlight)}
		t.peers[node] = p
	}
	return p, nil
}

// Forget closes the connection to node and drops its state. Call it when
// node leaves the ring, so connections to departed nodes do not pile up.
func (t *Transport) Forget(node string) {
	t.mu.Lock()
	p := t.peers[node]
	delete(t.peers, node)
	t.mu.Unlock()
	if p != nil {
		p.close()
	}
}

// peer is the outbound side towards one node: its connection, redialled
// on demand with backoff, and the slots bounding requests in flight.
type peer struct {
	t     *Transport
	node  string
	slots chan struct{}

	mu       sync.Mutex
	cur      *clientConn
	dialing  chan struct{} // closed when the dial in progress ends
	closed   bool
	backoff  time.Duration
	nextDial time.Time
	lastErr  error
}

// conn returns a live connection, dialling if there is none. Concurrent
// callers share one dial. During backoff it fails at once.
func (p *peer) conn(ctx context.Context) (*clientConn, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		if p.cur != nil && !p.cur.dead() {
			c := p.cur
			p.mu.Unlock()
			return c, nil
		}
		if ch := p.dialing; ch != nil {
			p.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if wait := time.Until(p.nextDial); wait > 0 {
			err := fmt.Errorf("reconnecting in %v after: %w", wait.Round(time.Millisecond), p.lastErr)
			p.mu.Unlock()
			return nil, err
		}
		ch := make(chan struct{})
		p.dialing = ch
		p.mu.Unlock()

		c, err := p.t.dial(ctx, p.node)

		p.mu.Lock()
		p.dialing = nil
		close(ch)
		switch {
		case err == nil && p.closed:
			c.fail(ErrClosed)
			err = ErrClosed
		case err == nil:
			p.cur, p.backoff = c, 0
		case ctx.Err() != nil:
			// The caller gave up; that says nothing about the peer.
		default:
			p.backoff = min(max(2*p.backoff, minBackoff), maxBackoff)
			p.nextDial, p.lastErr = time.Now().Add(p.backoff), err
			p.t.m.dialErrors.Inc()
		}
		p.mu.Unlock()
		return c, err
	}
}

func (p *peer) close() {
	p.mu.Lock()
	p.closed = true
	c := p.cur
	p.mu.Unlock()
	if c != nil {
		c.fail(ErrClosed)
	}
}

// dial connects to node, authenticates and starts the connection's reader.
func (t *Transport) dial(ctx context.Context, node string) (*clientConn, error) {
	addr, ok := t.cfg.Resolve(node)
	if !ok {
		return nil, fmt.Errorf("no forwarding address known for node %q (not a member?)", node)
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.DialTimeout)
	defer cancel()
	nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Now()) })
	br := bufio.NewReaderSize(nc, 4<<10)
	err = clientHandshake(nc, br, t.cfg.SecretKey, t.cfg.NodeID, node)
	if !stop() || err != nil {
		nc.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("handshake with %s at %s: %w", node, addr, err)
	}
	nc.SetDeadline(time.Time{})
	c := &clientConn{nc: nc, pending: make(map[uint64]chan error), lost: func() { t.h.PeerLost(node) }}
	if !t.start(func() { c.readReceipts(br) }) {
		nc.Close()
		return nil, ErrClosed
	}
	t.log.Debug("connected to peer", "node", node, "addr", addr)
	return c, nil
}

// clientConn is an outbound connection. Frames are written by Send and Ack
// callers under wmu; receipts are read by its reader goroutine, which
// completes the matching pending request.
type clientConn struct {
	nc     net.Conn
	nextID atomic.Uint64
	wmu    sync.Mutex

	mu      sync.Mutex
	pending map[uint64]chan error // by request id; each channel has room for one result
	err     error                 // why the connection died; set once

	lost func() // called once when the connection dies, unless closed here
}

func (c *clientConn) dead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err != nil
}

func (c *clientConn) register(id uint64) (chan error, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return nil, c.err
	}
	ch := make(chan error, 1)
	c.pending[id] = ch
	return ch, nil
}

func (c *clientConn) forget(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

func (c *clientConn) complete(id uint64, err error) {
	c.mu.Lock()
	ch, ok := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if ok {
		ch <- err
	}
}

// fail kills the connection: every pending request gets err, the next
// request dials again. Unless this node closed it (ErrClosed), the
// Handler hears that the peer may have lost what it held.
func (c *clientConn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	for id, ch := range c.pending {
		ch <- err
		delete(c.pending, id)
	}
	c.mu.Unlock()
	c.nc.Close()
	if c.lost != nil && !errors.Is(err, ErrClosed) {
		c.lost()
	}
}

// write writes one whole frame; a failed or partial write kills the
// connection, as the stream can no longer be parsed.
func (c *clientConn) write(frame []byte, timeout time.Duration) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(timeout))
	_, err := c.nc.Write(frame)
	return err
}

// readReceipts is the connection's reader goroutine.
func (c *clientConn) readReceipts(br *bufio.Reader) {
	var buf []byte
	for {
		typ, body, b, err := readFrame(br, buf, maxControlFrame)
		buf = b
		if err != nil {
			c.fail(fmt.Errorf("connection lost: %w", err))
			return
		}
		if typ != frameReceipt || len(body) < 9 {
			c.fail(fmt.Errorf("%w: expected a receipt, got frame type %d", errProtocol, typ))
			return
		}
		id := binary.BigEndian.Uint64(body)
		var rerr error
		if body[8] != 0 {
			rerr = fmt.Errorf("peer refused the request: %s", body[9:])
		}
		c.complete(id, rerr)
	}
}

// Serve accepts peers' connections and hands their requests to the Handler
// until ctx ends or Close is called. ctx is also the context of every
// Handle call. On return every inbound connection is closed and its
// goroutine has finished. Serve runs once per Transport; a Handle cut
// short by shutdown gets no receipt, so its sender routes the batch again.
func (t *Transport) Serve(ctx context.Context) error {
	t.mu.Lock()
	select {
	case <-t.closing:
		t.mu.Unlock()
		return ErrClosed
	default:
	}
	if t.serving {
		t.mu.Unlock()
		return errors.New("cluster: Serve called twice")
	}
	t.serving = true
	t.wg.Add(1)
	t.mu.Unlock()
	defer t.wg.Done()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var conns sync.WaitGroup
	// Shutdown: unblock Accept and every connection's read and Handle.
	conns.Go(func() {
		select {
		case <-ctx.Done():
		case <-t.closing:
		}
		cancel()
		t.ln.Close()
		t.mu.Lock()
		for c := range t.inbound {
			c.Close()
		}
		t.mu.Unlock()
	})
	for delay := time.Duration(0); ; {
		nc, aerr := t.ln.Accept()
		if aerr != nil {
			if ctx.Err() != nil || errors.Is(aerr, net.ErrClosed) {
				break
			}
			// Out of file descriptors and the like: wait, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.log.Warn("accepting peer connection failed", "err", aerr, "retry_in", delay)
			select {
			case <-time.After(delay):
				continue
			case <-ctx.Done():
			}
			break
		}
		delay = 0
		t.mu.Lock()
		if ctx.Err() != nil {
			t.mu.Unlock()
			nc.Close()
			break
		}
		// Over a cap the connection is closed before anything is read
		// or allocated for it.
		refused := ""
		switch {
		case len(t.inbound) >= t.cfg.MaxConns:
			refused = refusedTooMany
		case t.pending >= t.cfg.MaxPendingConns:
			refused = refusedTooManyNew
		default:
			t.inbound[nc] = struct{}{}
			t.pending++
		}
		t.mu.Unlock()
		if refused != "" {
			nc.Close()
			t.m.refused.WithLabelValues(refused).Inc()
			t.log.Warn("refused peer connection over the cap", "remote", nc.RemoteAddr().String(), "reason", refused)
			continue
		}
		conns.Go(func() {
			t.serveConn(ctx, nc)
			t.mu.Lock()
			delete(t.inbound, nc)
			t.mu.Unlock()
			nc.Close()
		})
	}
	cancel()
	conns.Wait()
	return nil
}

// serveConn is the goroutine of one inbound connection: it owns the
// connection's reads and writes.
//
// Until the peer is authenticated, the connection costs a small fixed
// amount: its goroutine, a handshake-sized read buffer and one frame
// buffer of maxHandshakeFrame bytes. Only then does it get the buffers
// batches need.
func (t *Transport) serveConn(ctx context.Context, nc net.Conn) {
	hs := bufio.NewReaderSize(nc, maxHandshakeFrame)
	nc.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	from, err := serverHandshake(nc, hs, t.cfg.SecretKey, t.cfg.NodeID)
	t.mu.Lock()
	t.pending--
	t.mu.Unlock()
	if err != nil {
		reason := refusedIncomplete
		var ref *errRefused
		var ne net.Error
		switch {
		case errors.As(err, &ref):
			reason = ref.reason
		case errors.Is(err, errProtocol):
			reason = refusedProtocol
		case errors.As(err, &ne) && ne.Timeout():
			reason = refusedTimeout
		}
		t.m.refused.WithLabelValues(reason).Inc()
		if reason != refusedIncomplete {
			t.log.Warn("refused peer connection", "remote", nc.RemoteAddr().String(), "reason", reason, "err", err)
		}
		return
	}
	nc.SetDeadline(time.Time{})
	// The handshake buffer holds nothing more (the peer waits for the
	// welcome before it sends a request), and a large read passes
	// through it without a copy.
	br := bufio.NewReaderSize(hs, 64<<10)
	log := t.log.With("peer", from)
	log.Debug("peer connected", "remote", nc.RemoteAddr().String())
	limit := max(maxControlFrame, 1+s2.MaxEncodedLen(t.cfg.MaxBatchBytes)+17)
	var buf, out []byte
	for {
		typ, body, b, err := readFrame(br, buf, limit)
		buf = b
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				log.Debug("peer connection closed", "err", err)
			}
			return
		}
		var id uint64
		var herr error
		switch {
		case typ == frameBatch && len(body) >= 17:
			id = binary.BigEndian.Uint64(body)
			seq := binary.BigEndian.Uint64(body[8:])
			t.m.recvBytes.Add(float64(len(body) + 5))
			var batch []byte
			batch, herr = t.decodeBatch(body[16], body[17:])
			if herr == nil {
				herr = t.h.Handle(ctx, from, batch, seq)
				t.m.recvBatches.Inc()
			}
		case typ == frameDecisions && len(body) >= 17:
			id = binary.BigEndian.Uint64(body)
			var payload []byte
			payload, herr = t.decodeBatch(body[16], body[17:])
			if dh, ok := t.h.(DecisionsHandler); herr == nil && ok {
				herr = dh.HandleDecisions(ctx, from, payload)
			} else if herr == nil {
				herr = errors.New("this node takes no decisions")
			}
		case typ == frameAck && len(body) >= 8 && len(body)%8 == 0:
			id = binary.BigEndian.Uint64(body)
			seqs := make([]uint64, 0, len(body)/8-1)
			for b := body[8:]; len(b) > 0; b = b[8:] {
				seqs = append(seqs, binary.BigEndian.Uint64(b))
			}
			t.h.Acked(from, seqs)
		default:
			log.Warn("peer broke the protocol; closing its connection", "frame_type", typ, "len", len(body))
			return
		}
		if ctx.Err() != nil {
			return // shutting down: no receipt, so the peer sends it elsewhere
		}
		out = appendReceipt(out[:0], id, herr)
		nc.SetWriteDeadline(time.Now().Add(t.cfg.SendTimeout))
		if _, err := nc.Write(out); err != nil {
			log.Debug("writing receipt failed", "err", err)
			return
		}
	}
}

// decodeBatch returns the batch payload in a new slice, which the Handler
// then owns.
func (t *Transport) decodeBatch(enc byte, p []byte) ([]byte, error) {
	switch enc {
	case encRaw:
		return append([]byte(nil), p...), nil
	case encS2:
		n, err := s2.DecodedLen(p)
		if err != nil {
			return nil, fmt.Errorf("corrupt s2 batch: %w", err)
		}
		if n > t.cfg.MaxBatchBytes {
			return nil, fmt.Errorf("batch of %d bytes exceeds max_batch_bytes %d", n, t.cfg.MaxBatchBytes)
		}
		out, err := s2.Decode(make([]byte, n), p)
		if err != nil {
			return nil, fmt.Errorf("corrupt s2 batch: %w", err)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("unknown batch encoding %d", enc)
	}
}

// TransportMetrics count peer traffic.
type TransportMetrics struct {
	sentBytes    prometheus.Counter
	sentRawBytes prometheus.Counter
	sentBatches  prometheus.Counter
	sendErrors   prometheus.Counter
	dialErrors   prometheus.Counter
	recvBytes    prometheus.Counter
	recvBatches  prometheus.Counter
	refused      *prometheus.CounterVec
}

// NewTransportMetrics creates the transport metrics and registers them with
// reg (nil: not registered).
func NewTransportMetrics(reg prometheus.Registerer) *TransportMetrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "tailsift_cluster_" + name, Help: help})
	}
	m := &TransportMetrics{
		sentBytes:    c("sent_bytes_total", "Bytes of batch frames written to peers, after compression."),
		sentRawBytes: c("sent_raw_bytes_total", "Bytes of batches peers took, before compression."),
		sentBatches:  c("sent_batches_total", "Batches peers took."),
		sendErrors:   c("send_errors_total", "Sends and acks that failed: unreachable peer, refusal or timeout."),
		dialErrors:   c("dial_errors_total", "Failed connection attempts to peers, handshakes included."),
		recvBytes:    c("received_bytes_total", "Bytes of batch frames read from peers."),
		recvBatches:  c("received_batches_total", "Batches received from peers and passed to the handler."),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tailsift_cluster_refused_connections_total",
			Help: "Inbound peer connections closed before they authenticated, by reason: too_many_connections, too_many_unauthenticated, handshake_timeout, handshake_incomplete, protocol, version, key_mismatch, wrong_node."},
			[]string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.sentBytes, m.sentRawBytes, m.sentBatches, m.sendErrors, m.dialErrors,
			m.recvBytes, m.recvBatches, m.refused)
	}
	return m
}
