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
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
	readyz := func() (int, string) {
		resp, err := http.Get("http://" + n.httpLn.Addr().String() + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	// 15 seconds of rejected logins.
	var code int
	var body string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("the node exited on rejected credentials (%v); it should keep retrying\n%s", err, logs.String())
		default:
		}
		if code, body = readyz(); code == http.StatusOK {
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
	waitFor(t, 60*time.Second, func() bool { code, _ := readyz(); return code == http.StatusOK })
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
