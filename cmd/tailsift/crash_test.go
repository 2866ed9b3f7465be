package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/tailsift/tailsift/bench/gen"
	"github.com/tailsift/tailsift/sampler"
	"github.com/twmb/franz-go/pkg/kadm"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// nodeProc runs a node in a child process and returns it with the address
// of its HTTP server.
func nodeProc(t *testing.T, brokers, group, dir, name string) (*exec.Cmd, string) {
	t.Helper()
	httpAddr := freeAddr(t)
	cmd := tailsiftCmd("run", "--brokers", brokers, "--group", group, "--node-id", name,
		"--archive", "file://"+dir, "--archive-roll-age", "1s", "--quiet-period", "1s", "--max-wait", "5s",
		"--http-addr", httpAddr, "--log-level", "info", "--grace-period", "20s",
		"--kafka-session-timeout", "6s", "--kafka-rebalance-timeout", "10s")
	cmd.Stderr = testLogWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, httpAddr
}

// waitHealthy waits until the node at addr answers /healthz: it has
// started, and handles SIGTERM gracefully.
func waitHealthy(t *testing.T, addr string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node at %s not healthy after %v: %v", addr, limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitCommitted waits until the group has committed every record of topic:
// every span was dropped or is durable in the archive.
func waitCommitted(t *testing.T, adm *kadm.Client, group, topic string, limit time.Duration) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(limit)
	var last string
	for {
		lag, err := adm.Lag(ctx, group)
		if gl, ok := lag[group]; ok {
			last = ""
			for _, pl := range gl.Lag[topic] {
				last += fmt.Sprintf(" p%d: commit %d end %d lag %d (%v);", pl.Partition, pl.Commit.At, pl.End.Offset, pl.Lag, pl.Err)
			}
		}
		if err == nil {
			if gl, ok := lag[group]; ok && gl.FetchErr == nil && gl.DescribeErr == nil {
				total := int64(0)
				for _, pl := range gl.Lag[topic] {
					if pl.Err == nil && pl.Commit.At >= 0 {
						total += pl.Lag
					} else {
						total += 1 << 40
					}
				}
				if len(gl.Lag[topic]) > 0 && total == 0 {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s did not commit everything within %v (last error %v):%s", group, limit, err, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestCrashRecovery kills a node with SIGKILL at random points while it
// drains a backlog, restarts it each time, and checks that every trace the
// policy keeps is in the archive, whole. Duplicates are allowed (they are
// what at-least-once costs) and reported.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes")
	}
	const topic = "otlp_spans"
	b, client := startBroker(t, 8)
	// Spans start three hours ago, so their hour partitions are finished
	// ones that compaction may rewrite.
	truth, err := gen.Produce(context.Background(), client, topic, gen.Config{Seed: 7, Traces: 20_000, Start: time.Now().Add(-3 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(client)
	dir := t.TempDir()

	r := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 3; i++ {
		p, _ := nodeProc(t, b.Addr(), "crash", dir, fmt.Sprintf("n%d", i))
		time.Sleep(time.Duration(500+r.IntN(2500)) * time.Millisecond)
		if err := p.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = p.Wait()
	}
	p, addr := nodeProc(t, b.Addr(), "crash", dir, "final")
	waitCommitted(t, adm, "crash", topic, 3*time.Minute)
	// The killed nodes may have drained the backlog already; the final
	// one must still start and stop cleanly.
	waitHealthy(t, addr, time.Minute)
	if err := p.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Fatalf("node exit after SIGTERM: %v", err)
	}

	if dup, _ := checkArchiveHasKept(t, dir, []*gen.Truth{truth}, 0.05); dup == 0 {
		t.Log("no duplicate rows before compaction")
	}
	out, err := tailsiftCmd("compact", "--archive", "file://"+dir, "--older-than", "1h").CombinedOutput()
	if err != nil {
		t.Fatalf("tailsift compact: %v\n%s", err, out)
	}
	t.Logf("tailsift compact:\n%s", out)
	if dup, _ := checkArchiveHasKept(t, dir, []*gen.Truth{truth}, 0.05); dup != 0 {
		t.Fatalf("%d duplicate rows after compaction, want 0", dup)
	}
}

// checkArchiveHasKept checks that every trace the default policy keeps (all
// error and slow traces; ordinary traces whose trace-ID randomness passes
// the 5% threshold) is archived with all its spans, and returns the number
// of duplicate rows (a span archived more than once).
func checkArchiveHasKept(t *testing.T, dir string, truths []*gen.Truth, p float64) (dupRows, allRows int) {
	t.Helper()
	prob, err := sampler.NewProbabilisticPolicy(p)
	if err != nil {
		t.Fatal(err)
	}
	db := openDuckDB(t)
	rows, err := db.Query(fmt.Sprintf(`SELECT trace_id, count(DISTINCT span_id), count(*)
		FROM read_parquet('%s/**/*.parquet', hive_partitioning = true) GROUP BY trace_id`, dir))
	if err != nil {
		t.Fatal(err)
	}
	type got struct{ distinct, rows int }
	archived := map[[16]byte]got{}
	for rows.Next() {
		var id string
		var g got
		if err := rows.Scan(&id, &g.distinct, &g.rows); err != nil {
			t.Fatal(err)
		}
		var tid [16]byte
		if _, err := hex.Decode(tid[:], []byte(id)); err != nil {
			t.Fatal(err)
		}
		archived[tid] = g
		dupRows += g.rows - g.distinct
		allRows += g.rows
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	lost, split, kept := 0, 0, 0
	for _, truth := range truths {
		for id, spans := range truth.SpansByTrace {
			_, isErr := truth.ErrorTraces[id]
			_, isSlow := truth.SlowTraces[id]
			tr := sampler.Trace{ID: id}
			keep := isErr || isSlow || prob.Decide(&tr).Decision == sampler.Keep
			g, ok := archived[id]
			switch {
			case keep && !ok:
				lost++
				if lost <= 5 {
					t.Errorf("kept trace %x (error=%v slow=%v) is not in the archive", id, isErr, isSlow)
				}
			case keep && g.distinct != spans:
				split++
				if split <= 5 {
					t.Errorf("kept trace %x has %d of %d spans in the archive", id, g.distinct, spans)
				}
			case keep:
				kept++
			}
		}
	}
	t.Logf("kept traces whole: %d, lost: %d, incomplete: %d; archive rows %d, duplicate rows %d (%.2f%%)",
		kept, lost, split, allRows, dupRows, 100*float64(dupRows)/float64(max(allRows, 1)))
	if lost > 0 || split > 0 {
		t.Fatalf("%d kept traces lost, %d incomplete", lost, split)
	}
	return dupRows, allRows
}
