package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Config configures a node's gossip membership.
type Config struct {
	// NodeID names this node in the cluster and the ring. It must be unique
	// and stable across restarts (a restarted node reclaims its traces
	// only if it keeps its name). Required.
	NodeID string
	// GossipAddr is the host:port memberlist binds to and advertises
	// (TCP and UDP). memberlist advertises an IP address, so a host name
	// (a container's or a pod's own name) is resolved once at start and
	// its first address, IPv4 preferred, is bound and advertised. 0.0.0.0
	// binds every interface and advertises the first private address.
	// Port 0 picks a free port (see (*Membership).GossipAddr). Required.
	GossipAddr string
	// ForwardAddr is the host:port of this node's Transport, advertised to
	// the others in the node's gossip metadata. Required.
	ForwardAddr string
	// Join lists gossip addresses of existing members. Empty: this node
	// starts a new cluster.
	Join []string
	// SecretKey, when set, encrypts and authenticates gossip (AES-GCM); it
	// must be 16, 24 or 32 bytes and the same on every node.
	SecretKey []byte
	// Logger receives memberlist's log lines at their levels. Default:
	// discard.
	Logger *slog.Logger
	// OnMessage, when set, receives the messages peers Send. It runs on
	// memberlist's packet goroutine: it must be quick and must not keep
	// msg.
	OnMessage func(msg []byte)

	// tune adjusts the memberlist config; tests use it for loopback speed.
	tune func(*memberlist.Config)
}

// metaVersion prefixes node metadata so its format can change.
const metaVersion = 1

func (c *Config) validate() error {
	var errs []string
	if c.NodeID == "" || len(c.NodeID) > 255 {
		errs = append(errs, fmt.Sprintf("cluster.node_id: must be 1..255 bytes, got %q", c.NodeID))
	}
	if host, port, err := net.SplitHostPort(c.GossipAddr); err != nil {
		errs = append(errs, fmt.Sprintf("cluster.gossip_addr: want host:port, got %q", c.GossipAddr))
	} else if host == "" {
		errs = append(errs, fmt.Sprintf("cluster.gossip_addr: host required (an IP address, this node's host name, or 0.0.0.0 for all interfaces), got %q", c.GossipAddr))
	} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		errs = append(errs, fmt.Sprintf("cluster.gossip_addr: bad port %q", port))
	}
	if _, _, err := net.SplitHostPort(c.ForwardAddr); err != nil {
		errs = append(errs, fmt.Sprintf("cluster.forward_addr: want host:port, got %q", c.ForwardAddr))
	} else if 1+len(c.ForwardAddr) > memberlist.MetaMaxSize {
		errs = append(errs, "cluster.forward_addr: too long")
	}
	switch len(c.SecretKey) {
	case 0, 16, 24, 32:
	default:
		errs = append(errs, fmt.Sprintf("cluster.secret_key: must be 16, 24 or 32 bytes, got %d", len(c.SecretKey)))
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// Membership is this node's view of the cluster, kept by memberlist gossip:
// which nodes are alive and where each accepts forwarded spans.
//
// Goroutines: memberlist's own, and one notifier that calls onChange.
type Membership struct {
	ml       *memberlist.Memberlist
	log      *slog.Logger
	onChange func(map[string]string)

	mu      sync.RWMutex
	members map[string]string             // node ID → forward address; written by memberlist's event callbacks
	gossip  map[string]memberlist.Address // node ID → gossip address, copied in those callbacks

	changed  chan struct{} // capacity 1: a pending change, coalescing bursts
	stop     chan struct{}
	done     chan struct{}
	shutOnce sync.Once

	life sync.Mutex // orders Leave and Shutdown, which may race on a signal
	shut bool
}

// Join starts gossip as cfg.NodeID and joins the members at cfg.Join.
// onChange (may be nil) receives the live members, node ID → forward
// address, self included, after every change. It is called from one
// goroutine, never concurrently; changes arriving while it runs are
// coalesced into one next call, and a call is made only when the map
// differs from the last one. The map is the callee's to keep.
//
// If cfg.Join is not empty and none of those members answer, Join fails:
// a node that silently formed a cluster of its own would own traces the
// real cluster also owns.
func Join(cfg Config, onChange func(members map[string]string)) (*Membership, error) {
	return JoinContext(context.Background(), cfg, onChange)
}

// JoinContext is Join that gives up when ctx ends (a signal during
// start-up), returning ctx's error at once. Contacting a member that does
// not answer takes up to memberlist's TCP timeout per address; the
// abandoned attempt then shuts its gossip down by itself.
//
// onChange is first called once the join succeeded, never during it, so
// a failed or abandoned join waits for nothing onChange waits for.
func JoinContext(ctx context.Context, cfg Config, onChange func(members map[string]string)) (*Membership, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	lg = lg.With("component", "cluster.membership")
	m := &Membership{
		log:      lg,
		onChange: onChange,
		members:  make(map[string]string),
		gossip:   make(map[string]memberlist.Address),
		changed:  make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}

	host, portStr, _ := net.SplitHostPort(cfg.GossipAddr)
	port, _ := strconv.Atoi(portStr)
	host, err := resolveHost(ctx, host)
	if err != nil {
		return nil, err
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeID
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertisePort = port
	if ip := net.ParseIP(host); !ip.IsUnspecified() {
		mc.AdvertiseAddr = host
	}
	// Faster than the LAN defaults: while a dead node is still in the
	// ring, spans owned by it bounce between send failures and re-routes,
	// so detection time matters more here than gossip bandwidth. Dead
	// detection is about SuspicionMult × log10(N) × ProbeInterval (2s for
	// ten nodes) instead of 4s.
	mc.ProbeInterval = 500 * time.Millisecond
	mc.ProbeTimeout = 250 * time.Millisecond
	mc.GossipInterval = 100 * time.Millisecond
	mc.PushPullInterval = 15 * time.Second
	// A node restarted under the same name but a new address (a
	// rescheduled pod) may take its name back this long after it died.
	mc.DeadNodeReclaimTime = 10 * time.Second
	mc.SecretKey = cfg.SecretKey
	mc.Logger = log.New(logWriter{lg}, "", 0)
	mc.Delegate = metaDelegate{meta: append([]byte{metaVersion}, cfg.ForwardAddr...), onMsg: cfg.OnMessage}
	mc.Events = (*events)(m)
	if cfg.tune != nil {
		cfg.tune(mc)
	}

	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster: start gossip on %s: %w", cfg.GossipAddr, err)
	}
	m.ml = ml
	if len(cfg.Join) > 0 {
		joined := make(chan error, 1)
		go func() {
			n, err := ml.Join(cfg.Join)
			if n == 0 {
				ml.Shutdown()
				// memberlist's error lists one line per address.
				err = errors.New(strings.Join(strings.Fields(err.Error()), " "))
				joined <- fmt.Errorf("cluster: join %v: %w (are those gossip addresses of running nodes, and is cluster.secret_key_file the same key as theirs? leave join empty on the first node)", cfg.Join, err)
				return
			}
			if err != nil {
				lg.Warn("some members could not be reached at join", "joined", n, "err", err)
			}
			joined <- nil
		}()
		select {
		case err := <-joined:
			if err != nil {
				return nil, err
			}
		case <-ctx.Done():
			go func() {
				if <-joined == nil {
					ml.Shutdown()
				}
			}()
			return nil, fmt.Errorf("cluster: join %v: %w", cfg.Join, context.Cause(ctx))
		}
	}
	// Members that arrived meanwhile are signalled on m.changed; the
	// notifier reports them first.
	go m.notify()
	return m, nil
}

// resolveHost returns host if it is an IP address, else the first address
// it resolves to, IPv4 first: memberlist binds and advertises IPs, and a
// peer must reach this node at the address it advertises.
func resolveHost(ctx context.Context, host string) (string, error) {
	if net.ParseIP(host) != nil {
		return host, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return "", fmt.Errorf("cluster.gossip_addr: resolve %q: %v (use an IP address, or 0.0.0.0 to bind all interfaces)", host, err)
	}
	for _, ip := range ips {
		if ip.Unmap().Is4() {
			return ip.Unmap().String(), nil
		}
	}
	return ips[0].String(), nil
}

// notify is the notifier goroutine: it owns the last reported map.
func (m *Membership) notify() {
	defer close(m.done)
	var last map[string]string
	for {
		select {
		case <-m.stop:
			return
		case <-m.changed:
		}
		now := m.Members()
		if last != nil && maps.Equal(now, last) {
			continue
		}
		last = now
		if m.onChange != nil {
			m.onChange(maps.Clone(now))
		}
	}
}

// Broadcast sends msg to every other live member, best effort (one UDP
// packet each; memberlist's limit is about 1,400 bytes). It suits small,
// periodic state such as watermarks, where a lost packet is replaced by
// the next.
//
// The addresses come from the copies the event callbacks keep: the nodes
// memberlist.Members returns are its own records, which its gossip
// goroutines update without a lock the caller could take.
func (m *Membership) Broadcast(msg []byte) {
	self := m.ml.LocalNode().Name
	m.mu.RLock()
	to := make([]memberlist.Address, 0, len(m.gossip))
	for name, a := range m.gossip {
		if name != self {
			to = append(to, a)
		}
	}
	m.mu.RUnlock()
	for _, a := range to {
		if err := m.ml.SendToAddress(a, msg); err != nil {
			m.log.Debug("gossip message not sent", "to", a.Name, "err", err)
		}
	}
}

// Members returns the live members (suspected ones included, until
// declared dead): node ID → forward address, self included.
func (m *Membership) Members() map[string]string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return maps.Clone(m.members)
}

// ForwardAddr returns the forward address of a live member. It is the
// Resolve function of a TransportConfig.
func (m *Membership) ForwardAddr(node string) (string, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	a, ok := m.members[node]
	return a, ok
}

// GossipAddr is the address this node gossips on, with the actual port when
// cfg.GossipAddr had port 0.
func (m *Membership) GossipAddr() string {
	n := m.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Leave tells the other members this node is leaving, waiting up to timeout
// for the message to spread, so they drop it from their rings at once
// instead of after failure detection. Call Shutdown after.
// After Shutdown it returns an error instead of leaving.
func (m *Membership) Leave(timeout time.Duration) error {
	m.life.Lock()
	defer m.life.Unlock()
	if m.shut {
		return errors.New("cluster: leave: gossip already shut down")
	}
	if err := m.ml.Leave(timeout); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	return nil
}

// Shutdown stops gossip and the notifier. Without Leave first, the others
// notice only by failure detection. Safe to call more than once.
func (m *Membership) Shutdown() error {
	var err error
	m.shutOnce.Do(func() {
		m.life.Lock()
		m.shut = true
		m.life.Unlock()
		err = m.ml.Shutdown()
		close(m.stop)
		<-m.done
	})
	return err
}

// events receives memberlist's join/leave/update callbacks. memberlist
// calls them one at a time, sometimes under its own locks: they only update
// the map and signal the notifier.
type events Membership

func (e *events) NotifyJoin(n *memberlist.Node)   { e.set(n) }
func (e *events) NotifyUpdate(n *memberlist.Node) { e.set(n) }

func (e *events) NotifyLeave(n *memberlist.Node) {
	e.mu.Lock()
	delete(e.members, n.Name)
	delete(e.gossip, n.Name)
	e.mu.Unlock()
	e.signal()
}

func (e *events) set(n *memberlist.Node) {
	if len(n.Meta) < 2 || n.Meta[0] != metaVersion {
		// Without a forward address the node cannot receive spans; every
		// node sees the same metadata, so all leave it out alike.
		e.log.Warn("member has no forward address in a known format; leaving it out of the ring (is it running another tailsift version?)",
			"node", n.Name, "addr", n.Address())
		e.mu.Lock()
		delete(e.members, n.Name)
		e.gossip[n.Name] = n.FullAddress()
		e.mu.Unlock()
	} else {
		e.mu.Lock()
		e.members[n.Name] = string(n.Meta[1:])
		e.gossip[n.Name] = n.FullAddress()
		e.mu.Unlock()
	}
	e.signal()
}

func (e *events) signal() {
	select {
	case e.changed <- struct{}{}:
	default: // a change is already pending; the notifier reads the latest map
	}
}

// metaDelegate publishes this node's metadata: its forward address.
type metaDelegate struct {
	meta  []byte
	onMsg func([]byte)
}

func (d metaDelegate) NodeMeta(limit int) []byte {
	if len(d.meta) > limit {
		panic("BUG: node metadata over memberlist's limit; Config.validate checks it")
	}
	return d.meta
}
func (d metaDelegate) NotifyMsg(msg []byte) {
	if d.onMsg != nil {
		d.onMsg(msg)
	}
}
func (metaDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (metaDelegate) LocalState(join bool) []byte                { return nil }
func (metaDelegate) MergeRemoteState(buf []byte, join bool)     {}

// logWriter turns memberlist's "[LEVEL] memberlist: message" lines into
// slog records at that level.
type logWriter struct{ log *slog.Logger }

var _ io.Writer = logWriter{}

func (w logWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	for _, l := range []struct {
		prefix string
		level  slog.Level
	}{{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelError}, {"[ERROR]", slog.LevelError}} {
		if rest, ok := strings.CutPrefix(line, l.prefix); ok {
			line, level = strings.TrimSpace(rest), l.level
			break
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	w.log.Log(context.Background(), level, line)
	return len(p), nil
}
