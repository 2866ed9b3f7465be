package main

import (
	"context"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"
	"github.com/tailsift/tailsift/bench/gen"
	"github.com/tailsift/tailsift/router/broker"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// requireKcat returns kcat's path, skipping (or failing in CI) without it.
func requireKcat(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("kcat is required in CI (apt-get install kcat)")
		}
		t.Skip("kcat not installed (apt-get install kcat); skipping the librdkafka interop part")
	}
	return p
}

// startTestNode runs a node against brokers with its archive in dir, until
// the returned stop function is called.
func startTestNode(t *testing.T, brokers, topic, dir string, edit func(*Config)) (*node, func()) {
	t.Helper()
	return startTestNodeLog(t, brokers, topic, dir, edit, testLogWriter{t})
}

// startTestNodeLog is startTestNode with the node's log going to logOut.
func startTestNodeLog(t *testing.T, brokers, topic, dir string, edit func(*Config), logOut io.Writer) (*node, func()) {
	t.Helper()
	cfg := defaultConfig()
	cfg.NodeID = "test"
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Log.Level = "warn"
	cfg.Kafka.Brokers = []string{brokers}
	cfg.Kafka.Topic = topic
	cfg.Kafka.Group = "e2e"
	cfg.Archive.URL = "file://" + dir
	cfg.Sampler.QuietPeriod = time.Second
	cfg.Sampler.MaxWait = 10 * time.Second
	cfg.GracePeriod = 20 * time.Second
	if edit != nil {
		edit(&cfg)
	}
	n, err := newNode(cfg, logOut)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.run(ctx) }()
	var stopped bool
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("node: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("node did not stop within 60s")
		}
	}
	t.Cleanup(stop)
	return n, stop
}

// startBroker starts an embedded broker with an otlp_spans topic of the
// given partitions, and a producer client for it; both stop with the test.
func startBroker(t *testing.T, partitions int32) (*broker.Broker, *kgo.Client) {
	t.Helper()
	b, err := broker.Start(broker.Config{Addr: "127.0.0.1:0", Topic: "otlp_spans", Partitions: partitions})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	client, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.DefaultProduceTopic("otlp_spans"), kgo.ProducerBatchMaxBytes(16<<20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	return b, client
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// waitRecords waits until the node has polled want records.
func waitRecords(t *testing.T, n *node, want int64) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for n.consumer.Records() < want {
		if time.Now().After(deadline) {
			t.Fatalf("node polled %d of %d records in 3 minutes", n.consumer.Records(), want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func openDuckDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestEndToEnd produces generated traces with franz-go and with kcat
// (librdkafka), plus malformed messages, runs one node, and checks the
// archive with DuckDB: every error and slow trace kept whole, the ordinary
// traces kept at the configured 5% (±1 point), and bad messages counted
// without losing the good spans around them.
func TestEndToEnd(t *testing.T) {
	kcat := requireKcat(t)
	const topic = "otlp_spans"
	// Half the traces through franz-go...
	b, client := startBroker(t, 8)
	ctx := context.Background()
	truth1, err := gen.Produce(ctx, client, topic, gen.Config{Seed: 1, Traces: 12_000})
	if err != nil {
		t.Fatal(err)
	}

	// ...half through kcat, one file per (binary) message, with malformed
	// messages in between.
	msgDir := t.TempDir()
	var files []string
	write := func(value []byte) error {
		f := filepath.Join(msgDir, fmt.Sprintf("%06d.bin", len(files)))
		files = append(files, f)
		return os.WriteFile(f, value, 0o644)
	}
	truth2, err := gen.Generate(gen.Config{Seed: 2, Traces: 12_000}, write)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 1))
	garbage := make([]byte, 512)
	for i := range garbage {
		garbage[i] = byte(r.Uint32())
	}
	first, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	bad := [][]byte{garbage, first[:len(first)/2], []byte(`{"resourceSpans":[{"scopeSpans":[]}]}`)}
	for _, v := range bad {
		if err := write(v); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < len(files); i += 500 {
		batch := files[i:min(i+500, len(files))]
		cmd := exec.Command(kcat, append([]string{"-P", "-b", b.Addr(), "-t", topic, "-X", "message.max.bytes=16000000"}, batch...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kcat: %v\n%s", err, out)
		}
	}

	dir := t.TempDir()
	// The dead-letter topic exists before the node starts, as in production
	// (producers do not create topics).
	const dlq = "otlp_spans_dead"
	if _, err := kadm.NewClient(client).CreateTopic(ctx, 1, 1, nil, dlq); err != nil {
		t.Fatal(err)
	}
	n, stop := startTestNode(t, b.Addr(), topic, dir, func(c *Config) { c.Kafka.DeadLetterTopic = dlq })
	waitRecords(t, n, int64(truth1.Messages+len(files)))
	if err := n.sampler.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	stop()

	if got := sumCounter(n.reg, "tailsift_router_malformed_messages_total", "", ""); got != float64(len(bad)) {
		t.Errorf("malformed messages counted: %v, want %d", got, len(bad))
	}
	checkDeadLetters(t, b.Addr(), dlq, bad)
	if got, want := sumCounter(n.reg, "tailsift_router_spans_received_total", "", ""), float64(truth1.Spans+truth2.Spans); got != want {
		t.Errorf("spans received: %v, want %v", got, want)
	}

	db := openDuckDB(t)
	archived := map[[16]byte]int{} // trace -> spans archived
	rates := map[[16]byte]float64{}
	rows, err := db.Query(fmt.Sprintf(`SELECT trace_id, count(*), any_value(sample_rate)
		FROM read_parquet('%s/**/*.parquet', hive_partitioning = true) GROUP BY trace_id`, dir))
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var c int
		var rate float64
		if err := rows.Scan(&id, &c, &rate); err != nil {
			t.Fatal(err)
		}
		var tid [16]byte
		if _, err := hex.Decode(tid[:], []byte(id)); err != nil {
			t.Fatalf("trace_id %q is not hex: %v", id, err)
		}
		archived[tid] = c
		rates[tid] = rate
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	ordinary, keptOrdinary := 0, 0
	for _, truth := range []*gen.Truth{truth1, truth2} {
		for id, spans := range truth.SpansByTrace {
			_, isErr := truth.ErrorTraces[id]
			_, isSlow := truth.SlowTraces[id]
			switch {
			case isErr || isSlow:
				if archived[id] != spans {
					t.Errorf("trace %x (error=%v slow=%v): %d of %d spans archived", id, isErr, isSlow, archived[id], spans)
				}
				if rates[id] != 1 {
					t.Errorf("trace %x: sample_rate %v, want 1", id, rates[id])
				}
			default:
				ordinary++
				if c, ok := archived[id]; ok {
					keptOrdinary++
					if c != spans {
						t.Errorf("ordinary trace %x: %d of %d spans archived", id, c, spans)
					}
					if rates[id] != 20 {
						t.Errorf("ordinary trace %x: sample_rate %v, want 20", id, rates[id])
					}
				}
			}
		}
	}
	share := float64(keptOrdinary) / float64(ordinary)
	t.Logf("ordinary traces: %d, kept %d (%.2f%%); archived traces %d", ordinary, keptOrdinary, 100*share, len(archived))
	if ordinary < 20_000 {
		t.Fatalf("only %d ordinary traces generated, want >= 20,000", ordinary)
	}
	if math.Abs(share-0.05) > 0.01 {
		t.Errorf("kept %.2f%% of ordinary traces, want 5%% ± 1 point", 100*share)
	}

	// The archive tools on what the node wrote: one error trace by ID,
	// printed as a tree with all its spans.
	for id, spans := range truth1.ErrorTraces {
		out, err := tailsiftCmd("trace", hex.EncodeToString(id[:]), "--archive", "file://"+dir, "--since", "48h").CombinedOutput()
		if err != nil {
			t.Fatalf("tailsift trace: %v\n%s", err, out)
		}
		text := string(out)
		if !strings.Contains(text, fmt.Sprintf("· %d spans ·", spans)) || !strings.Contains(text, "ERROR") ||
			strings.Count(text, "─ ") != spans || !strings.Contains(text, "opened") {
			t.Fatalf("tailsift trace printed:\n%s", text)
		}
		t.Logf("tailsift trace:\n%s", text)
		break
	}
	out, err := tailsiftCmd("retention", "--archive", "file://"+dir, "--max-age", "30d", "--dry-run").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "would delete 0 of 1 partitions") {
		t.Fatalf("tailsift retention: %v\n%s", err, out)
	}
}

// checkDeadLetters reads the dead-letter topic and checks it holds exactly
// the bad messages, each with headers naming why and where it came from.
func checkDeadLetters(t *testing.T, addr, topic string, bad [][]byte) {
	t.Helper()
	c, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got []*kgo.Record
	deadline := time.Now().Add(30 * time.Second)
	for len(got) < len(bad) && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		fs := c.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) { got = append(got, r) })
	}
	if len(got) != len(bad) {
		t.Fatalf("dead-letter topic holds %d records, want %d", len(got), len(bad))
	}
	want := map[string]bool{}
	for _, v := range bad {
		want[string(v)] = true
	}
	for _, r := range got {
		if !want[string(r.Value)] {
			t.Errorf("dead-letter record of %d bytes is not one of the bad messages", len(r.Value))
		}
		h := map[string]string{}
		for _, x := range r.Headers {
			h[x.Key] = string(x.Value)
		}
		if h["tailsift.error.kind"] == "" || h["tailsift.error"] == "" || !strings.HasPrefix(h["tailsift.source"], "otlp_spans/") {
			t.Errorf("dead-letter record headers: %v", h)
		}
	}
}
