package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary act as the tailsift command in child
// processes (TAILSIFT_TEST_AS_MAIN=1), so crash tests can kill a real node
// process without building a separate binary.
func TestMain(m *testing.M) {
	if os.Getenv("TAILSIFT_TEST_AS_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// tailsiftCmd returns a command running this test binary as tailsift.
func tailsiftCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "TAILSIFT_TEST_AS_MAIN=1")
	return cmd
}

func TestRunRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	bad := dir + "/bad.yaml"
	if err := os.WriteFile(bad, []byte("kafka:\n  topic: t\n  brokerz: [x]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string // in the one line of error output
	}{
		{"bad encoding flag", []string{"run", "--encoding", "avro"}, `kafka.encoding: "avro" is not allowed`},
		{"bad duration", []string{"run", "--quiet-period", "soon"}, "sampler.quiet_period"},
		{"unknown key in file", []string{"run", "--config", bad}, "brokerz"},
		{"bad archive url", []string{"run", "--archive", "ftp://x/y"}, "archive.url"},
		{"max wait below quiet period", []string{"run", "--quiet-period", "10s", "--max-wait", "5s"}, "sampler.max_wait"},
		{"unknown flag", []string{"run", "--no-such-flag"}, "no-such-flag"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, &stdout, &stderr)
			if code == 0 {
				t.Fatalf("exit code 0, want non-zero; stderr: %s", stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("stderr %q does not name %q", stderr.String(), tc.want)
			}
		})
	}
}

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	good := dir + "/good.yaml"
	cfg := "kafka:\n  brokers: [127.0.0.1:9092]\n  sasl:\n    mechanism: SCRAM-SHA-256\n    username: u\n    password: hunter2\nsampler:\n  quiet_period: 2s\n"
	if err := os.WriteFile(good, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"config", "check", good}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	if strings.Contains(out, "hunter2") || !strings.Contains(out, "*****") {
		t.Fatalf("password not masked:\n%s", out)
	}
	if !strings.Contains(out, "quiet_period: 2s") {
		t.Fatalf("effective config lacks the file's value:\n%s", out)
	}
}

func TestRunRejectsBadPolicy(t *testing.T) {
	f := t.TempDir() + "/p.yaml"
	os.WriteFile(f, []byte("policies:\n  - type: latency\n    threshold: soon\n"), 0o644)
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"run", "--config", f}, &stdout, &stderr); code == 0 ||
		!strings.Contains(stderr.String(), `policies[0].threshold`) {
		t.Fatalf("exit %d, stderr %q: want non-zero naming policies[0].threshold", code, stderr.String())
	}
}

// TestPolicyReload changes the policy of a running node: SIGHUP applies a
// good policy; a bad one is rejected and the node keeps running.
func TestPolicyReload(t *testing.T) {
	dir := t.TempDir()
	f := dir + "/tailsift.yaml"
	write := func(policy string) {
		t.Helper()
		doc := "kafka:\n  brokers: [127.0.0.1:1]\narchive:\n  url: file://" + dir + "/archive\n" + policy
		if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("policies:\n  - type: error\n")
	addr := freeAddr(t)
	cmd := tailsiftCmd("run", "--config", f, "--http-addr", addr, "--node-id", "reload", "--log-level", "error")
	cmd.Stderr = testLogWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	reloads := func(result string) float64 {
		return scrape(t, addr, `tailsift_policy_reloads_total{result="`+result+`"}`)
	}
	waitFor(t, 20*time.Second, func() bool { return scrape(t, addr, "tailsift_router_records_total") == 0 })

	write("policies:\n  - type: probabilistic\n    rate: 0.5\n")
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, func() bool { return reloads("applied") >= 1 })

	write("policies:\n  - type: probabilistic\n    rate: two\n")
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, func() bool { return reloads("rejected") >= 1 })
	if cmd.ProcessState != nil {
		t.Fatal("the node exited after a bad reload")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}

// scrape returns the value of one metric line from a node's /metrics, or
// -1 when the endpoint or the line is not there.
func scrape(t *testing.T, addr, metric string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, metric+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

func waitFor(t *testing.T, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
