package cluster

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// fastGossip shortens memberlist's timers for a loopback cluster.
func fastGossip(c *memberlist.Config) {
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 50 * time.Millisecond
	c.GossipInterval = 20 * time.Millisecond
	c.PushPullInterval = time.Second
	c.TCPTimeout = time.Second
}

// watcher records the maps onChange reports.
type watcher struct {
	mu    sync.Mutex
	last  map[string]string
	calls int
}

func (w *watcher) onChange(m map[string]string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.last = m
	w.calls++
}

func (w *watcher) get() map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMembershipConvergesAndSeesLeave(t *testing.T) {
	for _, c := range []struct {
		name string
		key  []byte
	}{{"plain", nil}, {"encrypted", []byte("0123456789abcdef")}} {
		t.Run(c.name, func(t *testing.T) {
			var nodes []*Membership
			var watchers []*watcher
			want := map[string]string{}
			for i := range 3 {
				id := fmt.Sprintf("n%d", i)
				fwd := fmt.Sprintf("127.0.0.1:%d", 7000+i) // advertised only
				want[id] = fwd
				cfg := Config{NodeID: id, GossipAddr: "127.0.0.1:0", ForwardAddr: fwd, SecretKey: c.key, tune: fastGossip}
				if i > 0 {
					cfg.Join = []string{nodes[0].GossipAddr()}
				}
				w := &watcher{}
				m, err := Join(cfg, w.onChange)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { m.Shutdown() })
				nodes, watchers = append(nodes, m), append(watchers, w)
			}
			for i, w := range watchers {
				eventually(t, 5*time.Second, fmt.Sprintf("n%d sees %v", i, want), func() bool {
					return maps.Equal(w.get(), want) && maps.Equal(nodes[i].Members(), want)
				})
			}
			if a, ok := nodes[0].ForwardAddr("n2"); !ok || a != want["n2"] {
				t.Fatalf("ForwardAddr(n2) = %q, %v", a, ok)
			}

			if err := nodes[2].Leave(time.Second); err != nil {
				t.Fatal(err)
			}
			nodes[2].Shutdown()
			delete(want, "n2")
			for i, w := range watchers[:2] {
				eventually(t, 5*time.Second, fmt.Sprintf("n%d sees n2 leave", i), func() bool {
					return maps.Equal(w.get(), want)
				})
			}
			if _, ok := nodes[0].ForwardAddr("n2"); ok {
				t.Fatal("ForwardAddr still resolves a node that left")
			}
		})
	}
}

func TestMembershipJoinFailsWithoutSeeds(t *testing.T) {
	_, err := Join(Config{NodeID: "lonely", GossipAddr: "127.0.0.1:0", ForwardAddr: "127.0.0.1:1",
		Join: []string{"127.0.0.1:1"}, tune: fastGossip}, nil)
	if err == nil || !strings.Contains(err.Error(), "leave join empty on the first node") {
		t.Fatalf("Join with no reachable seed: %v", err)
	}
}

func TestMembershipConfigErrors(t *testing.T) {
	_, err := Join(Config{NodeID: "", GossipAddr: ":7946", ForwardAddr: "x", SecretKey: []byte("short")}, nil)
	for _, want := range []string{"node_id", "gossip_addr: host required", "forward_addr", "secret_key"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %q", err, want)
		}
	}
}

func TestLogWriterLevels(t *testing.T) {
	var buf bytes.Buffer
	w := logWriter{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	f := func(line, want string) {
		t.Helper()
		buf.Reset()
		w.Write([]byte(line + "\n"))
		if !strings.Contains(buf.String(), want) {
			t.Errorf("%q logged as %q, want %q in it", line, buf.String(), want)
		}
	}
	f("[DEBUG] memberlist: Stream connection from=127.0.0.1:5", `level=DEBUG msg="Stream connection from=127.0.0.1:5"`)
	f("[WARN] memberlist: Was able to connect to n2 over TCP", "level=WARN")
	f("[ERR] memberlist: Failed to send", "level=ERROR")
	f("plain line", `level=INFO msg="plain line"`)
}

func TestMembershipBroadcast(t *testing.T) {
	var mu sync.Mutex
	got := map[string][]string{}
	var nodes []*Membership
	for i := range 3 {
		id := fmt.Sprintf("b%d", i)
		cfg := Config{NodeID: id, GossipAddr: "127.0.0.1:0", ForwardAddr: "127.0.0.1:1", tune: fastGossip,
			OnMessage: func(msg []byte) {
				mu.Lock()
				defer mu.Unlock()
				got[id] = append(got[id], string(msg))
			}}
		if i > 0 {
			cfg.Join = []string{nodes[0].GossipAddr()}
		}
		m, err := Join(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Shutdown() })
		nodes = append(nodes, m)
	}
	eventually(t, 5*time.Second, "three members", func() bool { return len(nodes[2].Members()) == 3 })
	eventually(t, 5*time.Second, "every other node hears b0", func() bool {
		nodes[0].Broadcast([]byte("hello from b0"))
		mu.Lock()
		defer mu.Unlock()
		return len(got["b1"]) > 0 && len(got["b2"]) > 0
	})
	mu.Lock()
	defer mu.Unlock()
	if len(got["b0"]) != 0 || got["b1"][0] != "hello from b0" {
		t.Fatalf("messages: %v", got)
	}
}

// TestMembershipLeaveAfterShutdown: a shutdown racing a graceful leave (both
// follow a signal) gives the leave an error, not memberlist's panic.
func TestMembershipLeaveAfterShutdown(t *testing.T) {
	m, err := Join(Config{NodeID: "n0", GossipAddr: "127.0.0.1:0", ForwardAddr: "127.0.0.1:1", tune: fastGossip}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := m.Leave(time.Second); err == nil || !strings.Contains(err.Error(), "shut down") {
		t.Fatalf("Leave after Shutdown: %v", err)
	}
}

// TestMembershipResolvesHostName checks that a node can gossip on its host
// name, as containers and pods know themselves: the name is bound and
// advertised as its IP address, and a peer joins through the name.
func TestMembershipResolvesHostName(t *testing.T) {
	w0, w1 := &watcher{}, &watcher{}
	m0, err := Join(Config{NodeID: "a", GossipAddr: "localhost:0", ForwardAddr: "a:7947", tune: fastGossip}, w0.onChange)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m0.Shutdown() })
	host, port, _ := strings.Cut(m0.GossipAddr(), ":")
	if host != "127.0.0.1" {
		t.Fatalf("gossip address %s, want 127.0.0.1:port", m0.GossipAddr())
	}
	m1, err := Join(Config{NodeID: "b", GossipAddr: "localhost:0", ForwardAddr: "b:7947", Join: []string{"localhost:" + port}, tune: fastGossip}, w1.onChange)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m1.Shutdown() })
	want := map[string]string{"a": "a:7947", "b": "b:7947"}
	eventually(t, 10*time.Second, "both nodes see both", func() bool {
		return maps.Equal(w0.get(), want) && maps.Equal(w1.get(), want)
	})

	_, err = Join(Config{NodeID: "c", GossipAddr: "no-such-host.invalid:0", ForwardAddr: "c:7947"}, nil)
	if err == nil || !strings.Contains(err.Error(), "cluster.gossip_addr") {
		t.Fatalf("unresolvable gossip host: err = %v, want one naming cluster.gossip_addr", err)
	}
}
