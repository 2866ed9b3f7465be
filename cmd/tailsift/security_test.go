package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/tailsift/tailsift/bench/gen"
	"github.com/tailsift/tailsift/router/broker"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// testCA is a certificate authority made for one test; nothing is written
// to the repository.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tailsift test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// serverTLS returns a TLS configuration for a server at 127.0.0.1 with a
// certificate signed by the CA.
func (ca *testCA) serverTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kafka"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// writeFile writes data to a file of its own in dir, readable by its
// owner only, and returns the path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// syncBuffer is a log sink tests read while the node writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// secureBroker starts an embedded broker that speaks TLS only and requires
// SCRAM-SHA-256, and returns it with the CA file clients must trust.
func secureBroker(t *testing.T, dir string) (*broker.Broker, string) {
	t.Helper()
	ca := newTestCA(t)
	b, err := broker.Start(broker.Config{Addr: "127.0.0.1:0", Topic: "otlp_spans", Partitions: 4, TLS: ca.serverTLS(t),
		SASL: broker.SASL{Mechanism: "SCRAM-SHA-256", User: "tailsift", Password: "correct horse"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b, writeFile(t, dir, "ca.pem", ca.pem)
}

// secureKafka is the client side of secureBroker with the given password.
func secureKafka(t *testing.T, dir, addr, caFile, password string) KafkaConfig {
	t.Helper()
	c := defaultConfig().Kafka
	c.Brokers = []string{addr}
	c.TLS = TLSConfig{Enabled: true, CAFile: caFile}
	c.SASL = SASLConfig{Mechanism: "SCRAM-SHA-256", Username: "tailsift",
		PasswordFile: writeFile(t, dir, "password", []byte(password+"\n"))}
	return c
}

// TestKafkaTLSAndSCRAM runs a node against a broker that accepts only TLS
// connections authenticated with SCRAM-SHA-256: it reads every generated
// span and archives every error trace whole.
func TestKafkaTLSAndSCRAM(t *testing.T) {
	dir := t.TempDir()
	b, caFile := secureBroker(t, dir)
	kc := secureKafka(t, dir, b.Addr(), caFile, "correct horse")
	opts, err := kafkaSecurityOpts(kc)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kgo.NewClient(append(opts, kgo.SeedBrokers(b.Addr()), kgo.ProducerBatchMaxBytes(16<<20))...)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	truth, err := gen.Produce(context.Background(), client, "otlp_spans", gen.Config{Seed: 7, Traces: 3000})
	if err != nil {
		t.Fatal(err)
	}
	archiveDir := filepath.Join(dir, "archive")
	n, stop := startTestNode(t, b.Addr(), "otlp_spans", archiveDir, func(c *Config) { c.Kafka = kc })
	waitSampled(t, n, truth.Spans)
	if err := n.sampler.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	stop()
	archived := archivedSpansByTrace(t, archiveDir)
	for id, spans := range truth.ErrorTraces {
		if archived[id] != spans {
			t.Errorf("error trace %x: %d of %d spans archived", id, archived[id], spans)
		}
	}
	t.Logf("%d spans read, %d error traces archived whole, %d traces archived", truth.Spans, len(truth.ErrorTraces), len(archived))
}

// TestKafkaWrongCredentials starts a node whose SASL password the broker
// rejects. The node keeps running and retrying without flooding the log:
// /readyz says why it is not ready, the log says which settings to check,
// a bounded number of times. When the mounted password file is corrected,
// the node authenticates and consumes, without a restart.
func TestKafkaWrongCredentials(t *testing.T) {
	dir := t.TempDir()
	b, caFile := secureBroker(t, dir)
	var handshakes atomic.Int64
	b.Cluster().ControlKey(int16(kmsg.SASLHandshake), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster().KeepControl()
		handshakes.Add(1)
		return nil, nil, false
	})
	kc := secureKafka(t, dir, b.Addr(), caFile, "wrong horse")
	logs := &syncBuffer{}
	cfg := defaultConfig()
	cfg.NodeID = "badcreds"
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Log.Format = "json"
	cfg.Log.ProgressInterval = 0
	cfg.Kafka = kc
	cfg.Kafka.Group = "badcreds"
	cfg.Archive.URL = "file://" + filepath.Join(dir, "archive")
	n, err := newNode(cfg, logs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// 15 seconds of rejected logins.
	var code int
	var body string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("the node exited on rejected credentials (%v); it should keep retrying\n%s", err, logs.String())
		default:
		}
		if code, body = readyz(t, n); code == http.StatusOK {
			t.Fatalf("/readyz is 200 with rejected credentials")
		}
	}
	const advice = "check kafka.sasl.username and kafka.sasl.password_file"
	if code != http.StatusServiceUnavailable || !strings.Contains(body, advice) {
		t.Errorf("/readyz = %d %q, want 503 naming the settings to check", code, body)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	var warnings, advised int
	for _, l := range lines {
		var rec struct{ Level, Msg, Err string }
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		if rec.Level == "WARN" || rec.Level == "ERROR" {
			warnings++
		}
		if strings.Contains(rec.Err, advice) {
			advised++
		}
	}
	attempts := handshakes.Load()
	t.Logf("15s of rejected logins: %d SASL handshakes, %d log lines (%d warnings, %d with advice); /readyz %d %q",
		attempts, len(lines), warnings, advised, code, body)
	if advised == 0 {
		t.Errorf("no log line names the settings to check:\n%s", logs.String())
	}
	// The throttle allows 10 lines per minute per kind of failure.
	if len(lines) > 25 {
		t.Errorf("%d log lines in 15s of rejected logins, want at most 25:\n%s", len(lines), logs.String())
	}
	if attempts < 5 {
		t.Errorf("only %d SASL handshakes in 15s: the node stopped retrying", attempts)
	}

	// The secret is fixed in place: the node recovers by itself.
	if err := os.WriteFile(cfg.Kafka.SASL.PasswordFile, []byte("correct horse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, func() bool { code, _ := readyz(t, n); return code == http.StatusOK })
}

// archivedSpansByTrace counts the archived spans of each trace with DuckDB.
func archivedSpansByTrace(t *testing.T, dir string) map[[16]byte]int {
	t.Helper()
	db := openDuckDB(t)
	rows, err := db.Query(fmt.Sprintf(`SELECT trace_id, count(*) FROM read_parquet('%s/**/*.parquet', hive_partitioning = true) GROUP BY trace_id`, dir))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[[16]byte]int{}
	for rows.Next() {
		var id string
		var c int
		if err := rows.Scan(&id, &c); err != nil {
			t.Fatal(err)
		}
		var tid [16]byte
		if _, err := hex.Decode(tid[:], []byte(id)); err != nil {
			t.Fatalf("trace_id %q: %v", id, err)
		}
		out[tid] = c
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitSampled waits until the sampler holds or has decided spans spans:
// every span read has reached it, so Flush decides them all.
func waitSampled(t *testing.T, n *node, spans int) {
	t.Helper()
	waitFor(t, 3*time.Minute, func() bool {
		return gauge(n.reg, "tailsift_sampler_buffered_spans")+sumCounter(n.reg, "tailsift_sampler_spans_kept_total", "", "")+
			sumCounter(n.reg, "tailsift_sampler_spans_dropped_total", "", "") >= float64(spans)
	})
}

// clusterNodeProc is a cluster node in a child process, with its addresses
// and what it logs.
type clusterNodeProc struct {
	cmd                   *exec.Cmd
	gossip, forward, http string
	logs                  *syncBuffer
}

// startClusterNode starts node name archiving to dir, joining join ("":
// none), with the extra flags.
func startClusterNode(t *testing.T, brokers, dir, name, join string, extra ...string) *clusterNodeProc {
	t.Helper()
	n := &clusterNodeProc{gossip: freeAddr(t), forward: freeAddr(t), http: freeAddr(t), logs: &syncBuffer{}}
	args := clusterArgs(t, brokers, dir, name, n.gossip, n.forward, n.http, extra...)
	if join != "" {
		args = append(args, "--join", join)
	}
	n.cmd = tailsiftCmd(args...)
	n.cmd.Stderr = io.MultiWriter(testLogWriter{t}, n.logs)
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.cmd.Process.Kill(); _ = n.cmd.Wait() })
	return n
}

// startFirstKeyedNode starts a broker and node n0 of a cluster with a key,
// and waits until n0 serves HTTP.
func startFirstKeyedNode(t *testing.T) (b *broker.Broker, dir, key string, n0 *clusterNodeProc) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts node processes")
	}
	b, _ = startBroker(t, 4)
	dir = t.TempDir()
	key = testClusterKey(t, dir)
	n0 = startClusterNode(t, b.Addr(), dir, "n0", "", "--cluster-secret-key-file", key)
	waitHealthy(t, n0.http, time.Minute)
	return b, dir, key, n0
}

// vmRSS returns the resident memory of process pid in bytes.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err != nil {
				t.Fatalf("VmRSS line %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// Peer protocol frames, as cluster/wire.go defines them: a big-endian
// uint32 length of what follows, a type byte, the body.
const (
	frameHello    = 1
	frameProof    = 3
	frameWelcome  = 4
	frameBatch    = 5
	frameAck      = 6
	frameReceipt  = 7
	peerProtoVers = 1
)

func peerFrame(typ byte, body ...[]byte) []byte {
	b := []byte{0, 0, 0, 0, typ}
	for _, p := range body {
		b = append(b, p...)
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

// helloFrame claims to be node from, addressing node to.
func helloFrame(from, to string) []byte {
	nonce := make([]byte, 16)
	rand.Read(nonce)
	return peerFrame(frameHello, []byte{peerProtoVers}, nonce, []byte{byte(len(from))}, []byte(from), []byte{byte(len(to))}, []byte(to))
}

// rawPeer writes send to the forward port at addr and returns the frames
// the node answers with until it hangs up, failing the test if it does
// not within 10s.
func rawPeer(t *testing.T, addr string, send []byte) (types []byte, bodies [][]byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write(send) // the node may hang up before reading it all
	reply, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the node did not hang up: %v", err)
	}
	for len(reply) >= 5 {
		n := int(binary.BigEndian.Uint32(reply))
		if n < 1 || 4+n > len(reply) {
			break
		}
		types = append(types, reply[4])
		bodies = append(bodies, reply[5:4+n])
		reply = reply[4+n:]
	}
	return types, bodies
}

// TestClusterKeyKeepsOutsidersOut runs two node processes sharing a key,
// then plays outsiders: memberlist without the key or with another one
// cannot join the gossip; raw connections to the forward port cannot send
// a batch or an ack, nor pass for a member, and are not told the node's
// ID; and 2,000 unauthenticated connections cost the node little memory.
func TestClusterKeyKeepsOutsidersOut(t *testing.T) {
	b, dir, key, n0 := startFirstKeyedNode(t)
	startClusterNode(t, b.Addr(), dir, "n1", n0.gossip, "--cluster-secret-key-file", key)
	members := func() float64 { return scrape(t, n0.http, "tailsift_cluster_members") }
	waitFor(t, time.Minute, func() bool { return members() == 2 })

	t.Run("gossip", func(t *testing.T) {
		for i, k := range [][]byte{nil, []byte("another-key-of-32-bytes-for-test")} {
			mc := memberlist.DefaultLocalConfig()
			mc.Name = fmt.Sprintf("rogue-%d", i)
			mc.BindAddr, mc.BindPort = "127.0.0.1", 0
			mc.SecretKey = k
			mc.LogOutput = io.Discard
			ml, err := memberlist.Create(mc)
			if err != nil {
				t.Fatal(err)
			}
			joined, err := ml.Join([]string{n0.gossip})
			ml.Shutdown()
			if joined != 0 || err == nil {
				t.Errorf("memberlist with key %q joined the cluster (%d members answered, err %v)", k, joined, err)
			}
		}
		if m := members(); m != 2 {
			t.Errorf("n0 counts %v members, want its peer and itself", m)
		}
	})

	t.Run("forward port", func(t *testing.T) {
		batch := peerFrame(frameBatch, make([]byte, 8), make([]byte, 8), []byte{0}, []byte("spans"))
		ack := peerFrame(frameAck, make([]byte, 8), binary.BigEndian.AppendUint64(nil, 1))
		forgedProof := make([]byte, 32)
		rand.Read(forgedProof)
		for _, c := range []struct {
			name string
			send []byte
		}{
			{"batch without handshake", batch},
			{"ack without handshake", ack},
			{"claiming to be n1", slices.Concat(helloFrame("n1", "n0"), peerFrame(frameProof, forgedProof), batch, ack)},
			{"claiming to be n1, addressing another node", slices.Concat(helloFrame("n1", "n9"), peerFrame(frameProof, forgedProof), batch, ack)},
			// A hello declaring 1 MiB, which the node once allocated
			// before knowing who called.
			{"oversized hello", append(binary.BigEndian.AppendUint32(nil, 1<<20), append([]byte{frameHello}, make([]byte, 64<<10)...)...)},
		} {
			types, bodies := rawPeer(t, n0.forward, c.send)
			for i, typ := range types {
				if typ == frameReceipt {
					t.Errorf("%s: the node answered a request", c.name)
				}
				if typ == frameWelcome && (len(bodies[i]) == 0 || bodies[i][0] == 0) {
					t.Errorf("%s: the node welcomed the connection", c.name)
				}
				if bytes.Contains(bodies[i], []byte("n0")) {
					t.Errorf("%s: the node named itself to an outsider: %q", c.name, bodies[i])
				}
			}
			t.Logf("%s: frames %v, then the node hung up", c.name, types)
		}
		m := scrapeMetrics(t, n0.http)
		if got := m.sum("tailsift_cluster_received_batches_total"); got != 0 {
			t.Errorf("n0 received %v batches from outsiders", got)
		}
		for reason, want := range map[string]float64{"protocol": 3, "key_mismatch": 2} {
			if got := m.sum("tailsift_cluster_refused_connections_total", "reason="+reason); got < want {
				t.Errorf("refused connections for %s: %v, want at least %v", reason, got, want)
			}
		}
	})

	t.Run("2000 unauthenticated connections", func(t *testing.T) {
		if runtime.GOOS != "linux" {
			t.Skip("reads /proc/<pid>/status")
		}
		pid := n0.cmd.Process.Pid
		refused := func() float64 { return scrapeMetrics(t, n0.http).sum("tailsift_cluster_refused_connections_total") }
		before, refusedBefore := vmRSS(t, pid), refused()
		peak := before
		const conns = 2000
		open := make([]net.Conn, 0, conns)
		defer func() {
			for _, c := range open {
				c.Close()
			}
		}()
		stalled := helloFrame("mallory", "n0")
		stalled = stalled[:len(stalled)-1] // a hello that never ends
		declared := slices.Concat(binary.BigEndian.AppendUint32(nil, 1<<20), []byte{frameHello}, make([]byte, 1000))
		deadline := time.Now().Add(2 * time.Minute)
		for i := range conns {
			if time.Now().After(deadline) {
				t.Fatalf("only %d connections opened in 2 minutes", i)
			}
			c, err := net.DialTimeout("tcp", n0.forward, 5*time.Second)
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			open = append(open, c)
			if i%2 == 0 {
				c.Write(stalled)
			} else {
				c.Write(declared)
			}
			if i%100 == 99 {
				peak = max(peak, vmRSS(t, pid))
			}
		}
		peak = max(peak, vmRSS(t, pid))
		// Every connection ends refused, the last ones at the handshake
		// deadline.
		waitFor(t, time.Minute, func() bool { return refused()-refusedBefore >= conns })
		peak = max(peak, vmRSS(t, pid))
		m := scrapeMetrics(t, n0.http)
		t.Logf("RSS %d MiB before, peak %d MiB with %d unauthenticated connections; refused: %v over the cap, %v protocol, %v timeout",
			before>>20, peak>>20, conns, m.sum("tailsift_cluster_refused_connections_total", "reason=too_many_unauthenticated"),
			m.sum("tailsift_cluster_refused_connections_total", "reason=protocol"), m.sum("tailsift_cluster_refused_connections_total", "reason=handshake_timeout"))
		if grew := peak - before; grew >= 100<<20 {
			t.Errorf("RSS grew by %d MiB for %d unauthenticated connections, want under 100 MiB", grew>>20, conns)
		}
		if m := members(); m != 2 {
			t.Errorf("after the connections n0 counts %v members, want 2", m)
		}
	})
}

// TestClusterNeedsKey: a cluster setting without a key stops `run` and
// `config check` with an error naming the key; --insecure-cluster starts
// the node, which says loudly that it is insecure.
func TestClusterNeedsKey(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes")
	}
	dir := t.TempDir()
	const want = "cluster.secret_key_file: required"
	args := clusterArgs(t, "127.0.0.1:1", dir, "keyless", freeAddr(t), freeAddr(t), freeAddr(t))
	var stderr syncBuffer
	cmd := tailsiftCmd(args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), want) {
		t.Errorf("run without a key: %v, stderr %q; want a failure naming %q", err, stderr.String(), want)
	}

	file := writeFile(t, dir, "cluster.yaml", []byte("cluster:\n  gossip_addr: 127.0.0.1:7946\n  forward_addr: 127.0.0.1:7947\n"))
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"config", "check", file}, &out, &errOut); code == 0 || !strings.Contains(errOut.String(), want) {
		t.Errorf("config check without a key: exit %d, stderr %q; want a failure naming %q", code, errOut.String(), want)
	}
	file = writeFile(t, dir, "insecure.yaml", []byte("cluster:\n  gossip_addr: 127.0.0.1:7946\n  forward_addr: 127.0.0.1:7947\n  insecure: true\n"))
	out.Reset()
	errOut.Reset()
	if code := run(context.Background(), []string{"config", "check", file}, &out, &errOut); code != 0 {
		t.Errorf("config check with cluster.insecure: exit %d, %s", code, errOut.String())
	}

	n := startClusterNode(t, "127.0.0.1:1", dir, "insecure", "", "--insecure-cluster")
	waitFor(t, time.Minute, func() bool { return strings.Contains(n.logs.String(), "CLUSTER IS INSECURE") })
	n.cmd.Process.Signal(syscall.SIGTERM)
	if err := n.cmd.Wait(); err != nil {
		t.Errorf("insecure node exit after SIGTERM: %v", err)
	}
}

// TestClusterJoinFailureExits: a node whose --join finds nothing listening,
// or a member with another key, exits with an error within the join
// timeout; SIGTERM while a join waits on a member that never answers stops
// the node within its grace period.
func TestClusterJoinFailureExits(t *testing.T) {
	b, dir, key, n0 := startFirstKeyedNode(t)
	otherKey := writeFile(t, t.TempDir(), "other.key", []byte("another-key-of-32-bytes-for-test"))

	// memberlist's TCP timeout, per member address (DefaultLANConfig).
	const joinTimeout = 10 * time.Second
	// How long a node process may take to start on a busy machine.
	const startup = 15 * time.Second
	wait := func(t *testing.T, cmd *exec.Cmd, limit time.Duration) (error, time.Duration) {
		t.Helper()
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			return err, time.Since(start)
		case <-time.After(limit):
			cmd.Process.Kill()
			<-done
			t.Fatalf("the node still ran %v later", limit)
			return nil, 0
		}
	}
	for _, c := range []struct{ name, join, key string }{
		{"nothing listening", freeAddr(t), key},
		{"wrong key", n0.gossip, otherKey},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logs syncBuffer
			cmd := tailsiftCmd(clusterArgs(t, b.Addr(), dir, "joiner", freeAddr(t), freeAddr(t), freeAddr(t),
				"--cluster-secret-key-file", c.key, "--join", c.join)...)
			cmd.Stderr = &logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			err, took := wait(t, cmd, startup+joinTimeout)
			t.Logf("exited after %v: %v: %s", took.Round(time.Millisecond), err, strings.TrimSpace(logs.String()))
			if err == nil || !strings.Contains(logs.String(), "cluster: join") {
				t.Errorf("exit %v; want a failure saying the join failed", err)
			}
		})
	}

	t.Run("SIGTERM while joining", func(t *testing.T) {
		// A member that takes the connection and never answers.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		accepted := make(chan net.Conn, 8)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted <- c
			}
		}()
		const grace = 5 * time.Second
		cmd := tailsiftCmd(clusterArgs(t, b.Addr(), dir, "joiner", freeAddr(t), freeAddr(t), freeAddr(t),
			"--cluster-secret-key-file", key, "--join", ln.Addr().String(), "--grace-period", grace.String())...)
		cmd.Stderr = testLogWriter{t}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		select {
		case c := <-accepted:
			defer c.Close()
		case <-time.After(time.Minute):
			cmd.Process.Kill()
			t.Fatal("the node never tried to join")
		}
		cmd.Process.Signal(syscall.SIGTERM)
		err, took := wait(t, cmd, time.Minute)
		t.Logf("exited %v after SIGTERM: %v", took.Round(time.Millisecond), err)
		if took > grace {
			t.Errorf("the node took %v to exit after SIGTERM while joining, want under its grace period %v", took, grace)
		}
	})
}
