package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
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
