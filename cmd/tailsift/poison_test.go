package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tailsift/tailsift/router"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// crashMarkerEnv makes a node process started by a test exit with status 2
// on reading a record that contains its value: a record that kills the
// node, whatever the cause.
const crashMarkerEnv = "TAILSIFT_TEST_CRASH_MARKER"

func init() {
	marker := os.Getenv(crashMarkerEnv)
	if marker == "" {
		return
	}
	processNodeOptions = append(processNodeOptions, func(o *nodeOptions) {
		o.beforeScan = func(r *kgo.Record) {
			if bytes.Contains(r.Value, []byte(marker)) {
				os.Exit(2)
			}
		}
	})
}

// committedAll reports whether group has committed every record of topic.
func committedAll(ctx context.Context, adm *kadm.Client, group, topic string) bool {
	lag, err := adm.Lag(ctx, group)
	if err != nil {
		return false
	}
	gl, ok := lag[group]
	if !ok || gl.FetchErr != nil || gl.DescribeErr != nil || len(gl.Lag[topic]) == 0 {
		return false
	}
	for _, pl := range gl.Lag[topic] {
		if pl.Err != nil || pl.Commit.At < 0 || pl.Lag != 0 {
			return false
		}
	}
	return true
}

// TestPoisonRecordGuard writes 60 traces, one of them in a record that
// makes the node process exit whenever it reads it, and restarts the node
// each time it dies, as an orchestrator would. The node dies a bounded
// number of times, then skips that record (counted, logged by partition
// and offset) and archives every other trace.
func TestPoisonRecordGuard(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes")
	}
	const topic, group, records, poisonAt = "otlp_spans", "poison", 60, 30
	const marker = "crash-me-now"
	b, client := startBroker(t, 1)
	values := collectorRecords(t, router.EncodingProto, "fine", records)
	values[poisonAt] = collectorRecords(t, router.EncodingProto, marker, poisonAt+1)[poisonAt]
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	produceValues(ctx, t, client, topic, values)
	archiveDir, stateDir := t.TempDir(), t.TempDir()
	adm := kadm.NewClient(client)

	// maxCrashes: one in normal reading, then one per careful run until
	// the same record has been named twice.
	const maxCrashes = 3
	crashes := 0
	var logs syncBuffer
	var node *exec.Cmd
	var httpAddr string
	var exited chan error
	for node == nil {
		httpAddr = freeAddr(t)
		cmd := tailsiftCmd("run", "--brokers", b.Addr(), "--group", group, "--node-id", "guarded",
			"--archive", "file://"+archiveDir, "--archive-spool-dir", stateDir, "--archive-roll-age", "1s",
			"--quiet-period", "1s", "--max-wait", "5s", "--http-addr", httpAddr, "--log-level", "info", "--log-format", "json",
			"--grace-period", "20s", "--kafka-session-timeout", "6s", "--kafka-rebalance-timeout", "10s")
		cmd.Env = append(cmd.Env, crashMarkerEnv+"="+marker)
		cmd.Stderr = io.MultiWriter(&logs, testLogWriter{t})
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited = make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() { _ = cmd.Process.Kill() })
	wait:
		for {
			select {
			case err := <-exited:
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 2 {
					t.Fatalf("node exited with %v, want the crash hook's status 2", err)
				}
				if crashes++; crashes > maxCrashes {
					t.Fatalf("the node crashed %d times on the same record; the guard should have skipped it", crashes)
				}
				t.Logf("crash %d; restarting the node", crashes)
				break wait
			case <-ctx.Done():
				t.Fatalf("the group did not commit every record after %d crashes", crashes)
			case <-time.After(250 * time.Millisecond):
				if committedAll(ctx, adm, group, topic) {
					node = cmd
					break wait
				}
			}
		}
	}
	if crashes == 0 {
		t.Fatal("the node never crashed: the crash hook did not run")
	}
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), "\ntailsift_consumer_poison_records_total 1\n") {
		t.Errorf("tailsift_consumer_poison_records_total is not 1")
	}
	if err := node.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err != nil {
		t.Fatalf("node exit after SIGTERM: %v", err)
	}

	log := logs.String()
	skipped := false
	for _, line := range strings.Split(log, "\n") {
		skipped = skipped || strings.Contains(line, `"msg":"skipped a record that crashed the node"`) &&
			strings.Contains(line, fmt.Sprintf(`"partition":0,"offset":%d`, poisonAt))
	}
	if !skipped {
		t.Errorf("no log line says record %d of partition 0 was skipped", poisonAt)
	}
	if strings.Contains(log, marker) {
		t.Errorf("a log line quotes the poison record")
	}
	got := archivedSpansByTrace(t, archiveDir)
	spans := 0
	for _, c := range got {
		spans += c
	}
	if len(got) != records-1 || spans != 3*(records-1) {
		t.Fatalf("archived %d traces, %d spans; want every trace but the poison one: %d, %d", len(got), spans, records-1, 3*(records-1))
	}
	if st, err := os.ReadFile(filepath.Join(stateDir, "consumer-"+group+"-"+topic+".json")); err == nil {
		t.Logf("guard state: %s", st)
	}
}
