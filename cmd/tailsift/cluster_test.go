package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tailsift/tailsift/bench/gen"
	"github.com/tailsift/tailsift/router/broker"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// clusterProc runs a cluster node in a child process; join is a gossip
// address of a running member ("" for the first); extra flags come last
// and win over the ones set here.
func clusterProc(t *testing.T, brokers, dir, name, gossip, join string, extra ...string) *exec.Cmd {
	t.Helper()
	args := clusterArgs(t, brokers, dir, name, gossip, freeAddr(t), freeAddr(t), "--cluster-secret-key-file", testClusterKey(t, dir))
	if join != "" {
		args = append(args, "--join", join)
	}
	cmd := tailsiftCmd(append(args, extra...)...)
	cmd.Stderr = testLogWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// clusterArgs is the command line of a cluster node archiving to dir,
// then extra.
func clusterArgs(t *testing.T, brokers, dir, name, gossip, forward, httpAddr string, extra ...string) []string {
	t.Helper()
	return append([]string{"run", "--brokers", brokers, "--group", "cluster", "--node-id", name,
		"--archive", "file://" + dir, "--archive-roll-age", "1s", "--quiet-period", "1s", "--max-wait", "10s",
		"--http-addr", httpAddr, "--log-level", "warn", "--grace-period", "20s", "--kafka-session-timeout", "6s", "--kafka-rebalance-timeout", "10s",
		"--gossip-addr", gossip, "--forward-addr", forward}, extra...)
}

// testClusterKey returns the key file shared by the nodes whose archive
// is dir, beside it, writing it on first use.
func testClusterKey(t *testing.T, dir string) string {
	t.Helper()
	p := dir + ".cluster.key"
	if _, err := os.Stat(p); err != nil {
		writeFile(t, filepath.Dir(p), filepath.Base(p), []byte("tailsift-test-cluster-key-32byte\n"))
	}
	return p
}

// splits counts the archived traces by how they were decided. A decision
// is its decided_at; its late spans count with it.
type splits struct {
	traces int // archived traces
	// split: decided more than once, one of the decisions on a piece of
	// the trace (archived in pieces, the failure tail sampling at scale is
	// known for).
	split int
	// again: decided more than once, each time whole (a record read again
	// after a rebalance or a crash, its trace decided on another node:
	// duplicate rows, same spans, which compaction removes).
	again int
	// piecesOnly: no decision had the whole trace. Re-reading after a
	// crash can add a piece beside a whole decision (split), never this.
	piecesOnly int
}

func checkNoSplit(t *testing.T, dir string) splits {
	t.Helper()
	db := openDuckDB(t)
	q := fmt.Sprintf(`WITH rows AS (SELECT trace_id, span_id, decided_at, late
			FROM read_parquet('%s/**/*.parquet', hive_partitioning = true)),
		whole AS (SELECT trace_id, count(DISTINCT span_id) AS n FROM rows GROUP BY trace_id),
		dec AS (SELECT trace_id, decided_at, count(DISTINCT span_id) AS n FROM rows
			GROUP BY trace_id, decided_at HAVING bool_or(NOT late)),
		per AS (SELECT trace_id, count(*) AS decisions, bool_or(dec.n < whole.n) AS piece,
				bool_or(dec.n = whole.n) AS has_whole
			FROM dec JOIN whole USING (trace_id) GROUP BY trace_id)
		SELECT (SELECT count(*) FROM whole),
			count(*) FILTER (WHERE decisions > 1 AND piece),
			count(*) FILTER (WHERE decisions > 1 AND NOT piece),
			count(*) FILTER (WHERE NOT has_whole) FROM per`, dir)
	var s splits
	if err := db.QueryRow(q).Scan(&s.traces, &s.split, &s.again, &s.piecesOnly); err != nil {
		t.Fatal(err)
	}
	t.Logf("archived traces %d: split %d, decided again whole %d, only in pieces %d", s.traces, s.split, s.again, s.piecesOnly)
	return s
}

func startClusterTest(t *testing.T, traces int) (*broker.Broker, *kadm.Client, *gen.Truth, *kgo.Client) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts node processes")
	}
	b, client := startBroker(t, 8)
	return b, kadm.NewClient(client), nil, client
}

// startThree starts nodes n0, n1 and n2, the first alone and the others
// joining it, and returns them with n0's gossip address.
func startThree(t *testing.T, brokers, dir string) (n0, n1, n2 *exec.Cmd, g0 string) {
	t.Helper()
	g0 = freeAddr(t)
	n0 = clusterProc(t, brokers, dir, "n0", g0, "")
	time.Sleep(500 * time.Millisecond)
	n1 = clusterProc(t, brokers, dir, "n1", freeAddr(t), g0)
	n2 = clusterProc(t, brokers, dir, "n2", freeAddr(t), g0)
	return n0, n1, n2, g0
}

func stopAll(t *testing.T, procs ...*exec.Cmd) {
	t.Helper()
	for _, p := range procs {
		p.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		if err := p.Wait(); err != nil {
			t.Errorf("node exit after SIGTERM: %v", err)
		}
	}
}

// waitGroupStable waits until the group is stable with n members, each
// assigned partitions of the topic.
func waitGroupStable(t *testing.T, adm *kadm.Client, group string, n int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		groups, err := adm.DescribeGroups(context.Background(), group)
		if err == nil {
			g := groups[group]
			assigned := 0
			for _, m := range g.Members {
				if c, ok := m.Assigned.AsConsumer(); ok && len(c.Topics) > 0 && len(c.Topics[0].Partitions) > 0 {
					assigned++
				}
			}
			if g.State == "Stable" && len(g.Members) == n && assigned == n {
				return
			}
			err = fmt.Errorf("state %s, %d members, %d assigned", g.State, len(g.Members), assigned)
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s not stable with %d members after %v: %v", group, n, limit, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestClusterThreeNodes runs three nodes with no membership change while
// 50,000 traces are produced: every kept trace is archived whole, with one
// decision (no split, none decided again).
func TestClusterThreeNodes(t *testing.T) {
	b, adm, _, client := startClusterTest(t, 0)
	dir := t.TempDir()
	n0, n1, n2, _ := startThree(t, b.Addr(), dir)
	waitGroupStable(t, adm, "cluster", 3, time.Minute)

	truth, err := gen.Produce(context.Background(), client, "otlp_spans", gen.Config{Seed: 31, Traces: 50_000})
	if err != nil {
		t.Fatal(err)
	}
	waitCommitted(t, adm, "cluster", "otlp_spans", 4*time.Minute)
	stopAll(t, n0, n1, n2)

	checkArchiveHasKept(t, dir, []*gen.Truth{truth}, 0.05)
	if s := checkNoSplit(t, dir); s.split != 0 || s.again != 0 || s.piecesOnly != 0 {
		t.Fatalf("%d archived traces: %d split, %d decided again, %d only in pieces; want one decision each",
			s.traces, s.split, s.again, s.piecesOnly)
	}
}

// TestClusterKeepsTracesWhole runs three nodes, adds a fourth while
// traffic flows, then stops one with SIGTERM: every kept trace is archived
// whole and decided once.
func TestClusterKeepsTracesWhole(t *testing.T) {
	b, adm, _, client := startClusterTest(t, 0)
	dir := t.TempDir()
	n0, n1, n2, g0 := startThree(t, b.Addr(), dir)

	ctx := context.Background()
	truth1, err := gen.Produce(ctx, client, "otlp_spans", gen.Config{Seed: 11, Traces: 30_000})
	if err != nil {
		t.Fatal(err)
	}
	n3 := clusterProc(t, b.Addr(), dir, "n3", freeAddr(t), g0)
	truth2, err := gen.Produce(ctx, client, "otlp_spans", gen.Config{Seed: 12, Traces: 30_000})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	n1.Process.Signal(syscall.SIGTERM)
	if err := n1.Wait(); err != nil {
		t.Errorf("n1 exit after SIGTERM: %v", err)
	}
	waitCommitted(t, adm, "cluster", "otlp_spans", 4*time.Minute)
	stopAll(t, n0, n2, n3)

	checkArchiveHasKept(t, dir, []*gen.Truth{truth1, truth2}, 0.05)
	if s := checkNoSplit(t, dir); s.split != 0 || s.piecesOnly != 0 {
		t.Fatalf("%d of %d archived traces were split (%d only in pieces)", s.split, s.traces, s.piecesOnly)
	}
}

// TestClusterSurvivesKill kills one of three nodes with SIGKILL a second
// after it finished its first archive file, while it works: every kept
// trace is still archived whole. What the dead node had archived but not
// yet committed is read again and decided again on new owners, each
// record's spans on their own; when the spans other partitions forwarded
// to the dead node were already acknowledged (and committed there), the
// trace gets a piece decided beside its whole decision. How many depends
// on where the kill falls between commits (none to 16% of kept traces in
// runs of this test), so the test asserts what must hold whatever the
// timing: no trace archived only in pieces.
func TestClusterSurvivesKill(t *testing.T) {
	b, adm, _, client := startClusterTest(t, 0)
	dir := t.TempDir()
	n0, n1, n2, _ := startThree(t, b.Addr(), dir)
	truth, err := gen.Produce(context.Background(), client, "otlp_spans", gen.Config{Seed: 21, Traces: 50_000})
	if err != nil {
		t.Fatal(err)
	}
	waitArchived(t, dir, "n2", 30*time.Second)
	time.Sleep(time.Second)
	n2.Process.Signal(syscall.SIGKILL)
	n2.Wait()
	waitCommitted(t, adm, "cluster", "otlp_spans", 4*time.Minute)
	stopAll(t, n0, n1)

	checkArchiveHasKept(t, dir, []*gen.Truth{truth}, 0.05)
	if s := checkNoSplit(t, dir); s.piecesOnly != 0 {
		t.Errorf("%d of %d archived traces only in pieces: a kill must not lose a trace's whole decision", s.piecesOnly, s.traces)
	}
}

// waitArchived waits until node has finished an archive file under dir.
func waitArchived(t *testing.T, dir, node string, limit time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		found := false
		_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), "part-"+node+"-") && strings.HasSuffix(d.Name(), ".parquet") {
				found = true
				return fs.SkipAll
			}
			return nil
		})
		if found {
			return
		}
	}
	t.Fatalf("%s archived nothing in %v", node, limit)
}
