package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tailsift/tailsift/router"
)

// Both halves of a node's router satisfy Handler together.
var _ Handler = struct {
	*router.Receiver
	*router.Route
}{}

// TestMain fails the run if a goroutine of this package outlives the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := waitNoLeaks(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

func waitNoLeaks(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if strings.Contains(g, "tailsift/cluster.") && !strings.Contains(g, "TestMain") && !strings.Contains(g, "waitNoLeaks") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// directory resolves node IDs to transport addresses, like Membership.
type directory struct {
	mu    sync.Mutex
	addrs map[string]string
}

func (d *directory) set(node, addr string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.addrs == nil {
		d.addrs = map[string]string{}
	}
	d.addrs[node] = addr
}

func (d *directory) resolve(node string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.addrs[node]
	return a, ok
}

// recorder is a Handler that remembers everything.
type recorder struct {
	mu      sync.Mutex
	batches map[uint64][]byte // by seq
	handled int
	acked   map[uint64]int
	fail    error
	block   chan struct{} // when set, Handle waits for it to close
	changed chan struct{}
	lost    []string // PeerLost calls, in order
}

func newRecorder() *recorder {
	return &recorder{batches: map[uint64][]byte{}, acked: map[uint64]int{}, changed: make(chan struct{}, 1)}
}

func (r *recorder) Handle(ctx context.Context, from string, batch []byte, seq uint64) error {
	if r.block != nil {
		select {
		case <-r.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.handled++
	r.batches[seq] = batch
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.handled
}

func (r *recorder) Acked(from string, seqs []uint64) {
	r.mu.Lock()
	for _, s := range seqs {
		r.acked[s]++
	}
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) PeerLost(node string) {
	r.mu.Lock()
	r.lost = append(r.lost, node)
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) lostPeers() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.lost)
}

// startTransport starts a transport for node on loopback, registered in
// dir, serving until the test ends.
func startTransport(t testing.TB, dir *directory, node, addr string, key []byte, h Handler, opts ...func(*TransportConfig)) *Transport {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	cfg := TransportConfig{NodeID: node, ListenAddr: addr, SecretKey: key, Resolve: dir.resolve}
	for _, o := range opts {
		o(&cfg)
	}
	tr, err := NewTransport(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	dir.set(node, tr.Addr())
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- tr.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		tr.Close()
		if err := <-served; err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return tr
}

func testBatch(i int) []byte {
	if i%3 == 0 { // incompressible: sent raw
		b := make([]byte, 100+i)
		for j := range b {
			b[j] = byte((j*2654435761 + i) >> 7)
		}
		binary.BigEndian.PutUint64(b, uint64(i))
		return b
	}
	return fmt.Appendf(nil, "batch %d %s", i, strings.Repeat("span ", 50+i%100))
}

func TestTransportRoundTrip(t *testing.T) {
	var dir directory
	ha, hb := newRecorder(), newRecorder()
	a := startTransport(t, &dir, "a", "", nil, ha)
	b := startTransport(t, &dir, "b", "", nil, hb)
	ctx := context.Background()

	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 4 { // concurrent senders share the one connection
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				batch := testBatch(i)
				if err := a.Send(ctx, "b", batch, uint64(i)); err != nil {
					errs <- err
					return
				}
				clear(batch) // Send must not keep it
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	hb.mu.Lock()
	if hb.handled != n || len(hb.batches) != n {
		t.Fatalf("b handled %d batches (%d distinct), want %d once each", hb.handled, len(hb.batches), n)
	}
	for i := range n {
		if !bytes.Equal(hb.batches[uint64(i)], testBatch(i)) {
			t.Fatalf("batch %d arrived altered", i)
		}
	}
	hb.mu.Unlock()

	// b acknowledges every batch back to a.
	seqs := make([]uint64, n)
	for i := range seqs {
		seqs[i] = uint64(i)
	}
	for c := range slices.Chunk(seqs, 300) {
		if err := b.Ack(ctx, "a", c); err != nil {
			t.Fatal(err)
		}
	}
	ha.mu.Lock()
	defer ha.mu.Unlock()
	if len(ha.acked) != n {
		t.Fatalf("a got %d acks, want %d", len(ha.acked), n)
	}
	for s, k := range ha.acked {
		if k != 1 {
			t.Fatalf("seq %d acked %d times", s, k)
		}
	}
}

func TestTransportAuth(t *testing.T) {
	key1 := []byte("0123456789abcdef0123456789abcdef")
	key2 := []byte("fedcba9876543210fedcba9876543210")
	for _, c := range []struct {
		name           string
		client, server []byte
		wantErr        string
	}{
		{"same key", key1, key1, ""},
		{"no keys", nil, nil, ""},
		{"wrong key", key2, key1, "does not hold this node's secret key"},
		{"client without key", nil, key1, "requires a shared secret key"},
		{"server without key", key1, nil, "has no shared secret key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var dir directory
			h := newRecorder()
			startTransport(t, &dir, "srv", "", c.server, h)
			cl := startTransport(t, &dir, "cli", "", c.client, newRecorder())
			err := cl.Send(context.Background(), "srv", []byte("hello"), 1)
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("Send error %v, want one containing %q", err, c.wantErr)
			}
			if h.count() != 0 {
				t.Fatal("server handled a batch from an unauthenticated peer")
			}
		})
	}
}

// TestTransportRefusesForgedProof plays a client that ignores the server's
// MAC and answers with a made-up proof, to the right node and to another:
// the server must refuse both before reading any request, and without
// saying which node it is.
func TestTransportRefusesForgedProof(t *testing.T) {
	var dir directory
	h := newRecorder()
	srv := startTransport(t, &dir, "srv", "", []byte("0123456789abcdef"), h)
	for _, c := range []struct{ name, to, want string }{
		{"forged proof", "srv", "secret key mismatch"},
		{"forged proof to another node", "other", "secret key mismatch"},
	} {
		t.Run(c.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(nc)
			b, st := beginFrame(nil, frameHello)
			b = append(b, protoVersion)
			b = append(b, make([]byte, nonceLen)...)
			b = appendString(appendString(b, "mallory"), c.to)
			nc.Write(endFrame(b, st))
			typ, body, _, err := readFrame(br, nil, maxControlFrame)
			if err != nil {
				t.Fatal(err)
			}
			if typ == frameChallenge {
				b, st = beginFrame(nil, frameProof)
				b = append(b, bytes.Repeat([]byte{7}, 32)...)
				nc.Write(endFrame(b, st))
				if typ, body, _, err = readFrame(br, nil, maxControlFrame); err != nil {
					t.Fatal(err)
				}
			}
			if err := welcomeErr(body); typ != frameWelcome || err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got frame %d, %v; want a refusal containing %q", typ, err, c.want)
			}
			// Whatever follows is not read: the server hung up.
			b = (&Transport{}).appendPayload(nil, frameBatch, 1, 1, []byte("spans"))
			nc.Write(b)
			if _, _, _, err := readFrame(br, nil, maxControlFrame); err == nil {
				t.Fatal("server answered after refusing")
			}
		})
	}
	if h.count() != 0 {
		t.Fatal("a refused client got a batch handled")
	}
}

// TestTransportWrongNodeNotNamed: a client holding the key that addresses
// another node is refused, and the refusal does not name this node.
func TestTransportWrongNodeNotNamed(t *testing.T) {
	var dir directory
	key := []byte("0123456789abcdef")
	srv := startTransport(t, &dir, "srv", "", key, newRecorder())
	nc, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	err = clientHandshake(nc, bufio.NewReader(nc), key, "cli", "other")
	if err == nil || !strings.Contains(err.Error(), "not the one addressed") || strings.Contains(err.Error(), "srv") {
		t.Fatalf("handshake to the wrong node: %v; want a refusal that does not name the node", err)
	}
}

// TestTransportConnectionCaps holds MaxPendingConns connections open
// without a word: one more is closed at once and counted; once the idle
// ones reach the handshake timeout, a peer with the key gets through.
func TestTransportConnectionCaps(t *testing.T) {
	var dir directory
	key := []byte("0123456789abcdef")
	h := newRecorder()
	m := NewTransportMetrics(nil)
	srv := startTransport(t, &dir, "srv", "", key, h, func(c *TransportConfig) {
		c.MaxPendingConns, c.HandshakeTimeout, c.Metrics = 4, time.Second, m
	})
	refused := func(reason string) float64 { return testutil.ToFloat64(m.refused.WithLabelValues(reason)) }
	var idle []net.Conn
	for range 4 {
		nc, err := net.Dial("tcp", srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		idle = append(idle, nc)
	}
	// The server takes them in order, so the fifth finds the slots full.
	eventually(t, 10*time.Second, "the fifth connection closed at once", func() bool {
		nc, err := net.Dial("tcp", srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = nc.Read(make([]byte, 1))
		return errors.Is(err, io.EOF) && refused(refusedTooManyNew) > 0
	})
	eventually(t, 10*time.Second, "idle connections timed out", func() bool { return refused(refusedTimeout) >= 4 })
	cl := startTransport(t, &dir, "cli", "", key, newRecorder())
	if err := cl.Send(context.Background(), "srv", []byte("spans"), 1); err != nil {
		t.Fatal(err)
	}
	for _, nc := range idle {
		if _, err := nc.Read(make([]byte, 1)); err == nil {
			t.Error("an idle connection got an answer")
		}
	}
}

// TestTransportReconnect restarts the receiving node on the same address:
// sends fail while it is down, and succeed again once it is back.
func TestTransportReconnect(t *testing.T) {
	var dir directory
	ctx := context.Background()
	a := startTransport(t, &dir, "a", "", nil, newRecorder())

	hb := newRecorder()
	cfg := TransportConfig{NodeID: "b", ListenAddr: "127.0.0.1:0", Resolve: dir.resolve}
	b, err := NewTransport(cfg, hb)
	if err != nil {
		t.Fatal(err)
	}
	addr := b.Addr()
	dir.set("b", addr)
	bctx, stopB := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- b.Serve(bctx) }()
	if err := a.Send(ctx, "b", []byte("before"), 1); err != nil {
		t.Fatal(err)
	}
	stopB()
	b.Close()
	<-served

	// The first may fail on the dead connection, the second on the dial.
	for range 2 {
		if err := a.Send(ctx, "b", []byte("while down"), 2); err == nil {
			t.Fatal("Send to a stopped node succeeded")
		}
	}
	hb2 := newRecorder()
	cfg.ListenAddr = addr
	startTransport(t, &dir, "b", addr, nil, hb2)
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := a.Send(ctx, "b", []byte("after"), 3)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reconnect within 5s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	hb2.mu.Lock()
	defer hb2.mu.Unlock()
	if string(hb2.batches[3]) != "after" || hb2.handled != 1 {
		t.Fatalf("restarted node handled %d batches: %q", hb2.handled, hb2.batches[3])
	}
}

// TestTransportReportsLostPeer: when a peer that took batches goes away,
// the sender hears of it at once (its router then routes what the peer
// had not acknowledged again); when the sender itself closes the
// connection, it does not.
func TestTransportReportsLostPeer(t *testing.T) {
	var dir directory
	ctx := context.Background()
	ha := newRecorder()
	a := startTransport(t, &dir, "a", "", nil, ha)
	b, err := NewTransport(TransportConfig{NodeID: "b", ListenAddr: "127.0.0.1:0", Resolve: dir.resolve}, newRecorder())
	if err != nil {
		t.Fatal(err)
	}
	dir.set("b", b.Addr())
	bctx, stopB := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- b.Serve(bctx) }()
	if err := a.Send(ctx, "b", []byte("held by b"), 1); err != nil {
		t.Fatal(err)
	}
	if lost := ha.lostPeers(); len(lost) != 0 {
		t.Fatalf("peer reported lost while connected: %v", lost)
	}
	stopB()
	b.Close()
	<-served
	deadline := time.After(5 * time.Second)
	for len(ha.lostPeers()) == 0 {
		select {
		case <-ha.changed:
		case <-deadline:
			t.Fatal("b went away and a was not told within 5s")
		}
	}
	if lost := ha.lostPeers(); !slices.Equal(lost, []string{"b"}) {
		t.Fatalf("lost peers %v, want [b]", lost)
	}

	// A connection a closes itself (b left the ring) is not a loss.
	hc := newRecorder()
	startTransport(t, &dir, "c", "", nil, hc)
	if err := a.Send(ctx, "c", []byte("held by c"), 2); err != nil {
		t.Fatal(err)
	}
	a.Forget("c")
	time.Sleep(50 * time.Millisecond)
	if lost := ha.lostPeers(); !slices.Equal(lost, []string{"b"}) {
		t.Fatalf("after Forget(c), lost peers %v, want [b]", lost)
	}
}

func TestTransportHandlerError(t *testing.T) {
	var dir directory
	hb := newRecorder()
	hb.fail = errors.New("router: forwarded batch is not valid OTLP")
	a := startTransport(t, &dir, "a", "", nil, newRecorder())
	startTransport(t, &dir, "b", "", nil, hb)
	err := a.Send(context.Background(), "b", []byte("junk"), 1)
	if err == nil || !strings.Contains(err.Error(), "not valid OTLP") {
		t.Fatalf("Send error %v, want the handler's", err)
	}
	// The connection survives a refused batch.
	hb.mu.Lock()
	hb.fail = nil
	hb.mu.Unlock()
	if err := a.Send(context.Background(), "b", []byte("ok"), 2); err != nil {
		t.Fatal(err)
	}
}

func TestTransportUnknownNode(t *testing.T) {
	var dir directory
	a := startTransport(t, &dir, "a", "", nil, newRecorder())
	if err := a.Send(context.Background(), "ghost", []byte("x"), 1); err == nil || !strings.Contains(err.Error(), "no forwarding address") {
		t.Fatalf("Send to unknown node: %v", err)
	}
}

// TestTransportBackpressure checks that a peer whose Handler blocks holds
// at most MaxInFlight sends; the next one waits.
func TestTransportBackpressure(t *testing.T) {
	var dir directory
	hb := newRecorder()
	hb.block = make(chan struct{})
	a := startTransport(t, &dir, "a", "", nil, newRecorder(), func(c *TransportConfig) { c.MaxInFlight = 2 })
	startTransport(t, &dir, "b", "", nil, hb)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			if err := a.Send(ctx, "b", []byte("held"), uint64(i)); err != nil {
				t.Error(err)
			}
		})
	}
	// Both slots are taken once the peer has the first batch in Handle.
	time.Sleep(100 * time.Millisecond)
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := a.Send(short, "b", []byte("third"), 3); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third Send with two in flight: %v, want it to wait until ctx ends", err)
	}
	close(hb.block)
	wg.Wait()
	if hb.count() != 2 {
		t.Fatalf("handled %d, want 2", hb.handled)
	}
}

// TestTransportShutdownUnblocks stops a receiver whose Handler is stuck
// and closes a sender with a request in flight: nothing hangs, and the
// pending Send fails so the router can route the batch again.
func TestTransportShutdownUnblocks(t *testing.T) {
	var dir directory
	hb := newRecorder()
	hb.block = make(chan struct{}) // never closed
	a, err := NewTransport(TransportConfig{NodeID: "a", ListenAddr: "127.0.0.1:0", Resolve: dir.resolve}, newRecorder())
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewTransport(TransportConfig{NodeID: "b", ListenAddr: "127.0.0.1:0", Resolve: dir.resolve}, hb)
	if err != nil {
		t.Fatal(err)
	}
	dir.set("b", b.Addr())
	bctx, stopB := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- b.Serve(bctx) }()

	sent := make(chan error, 2)
	for i := range 2 {
		go func() { sent <- a.Send(context.Background(), "b", []byte("stuck"), uint64(i)) }()
	}
	time.Sleep(100 * time.Millisecond)
	stopB() // Handle returns on ctx; no receipt; connection closed
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	b.Close()
	a.Close()
	for range 2 {
		select {
		case err := <-sent:
			if err == nil {
				t.Fatal("Send succeeded though the receiver never took the batch")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Send still blocked after shutdown")
		}
	}
	if err := a.Send(context.Background(), "b", []byte("x"), 9); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v, want ErrClosed", err)
	}
}
