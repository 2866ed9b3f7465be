package main

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestProcessRestartsWithMadvFree: a node restarts itself with
// madvdontneed=0 in GODEBUG (the same process, so a supervisor's PID stays
// right), keeps the rest of GODEBUG, and leaves a GODEBUG that already sets
// madvdontneed as it is; other commands do not restart.
func TestProcessRestartsWithMadvFree(t *testing.T) {
	node := []string{"run", "--brokers", "127.0.0.1:1", "--http-addr", "127.0.0.1:0", "--archive", "file://" + t.TempDir()}
	for _, tc := range []struct {
		args        []string
		given, want string
	}{
		{node, "", "madvdontneed=0"},
		{node, "gctrace=0", "gctrace=0,madvdontneed=0"},
		{node, "madvdontneed=1", "madvdontneed=1"},
		{[]string{"broker", "--addr", "127.0.0.1:0"}, "gctrace=0", "gctrace=0"},
	} {
		cmd := tailsiftCmd(tc.args...)
		cmd.Env = append(cmd.Env, "GODEBUG="+tc.given)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		environ := func() string {
			b, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/environ")
			if err != nil {
				t.Fatal(err)
			}
			for _, kv := range bytes.Split(b, []byte{0}) {
				if v, ok := strings.CutPrefix(string(kv), "GODEBUG="); ok {
					return v
				}
			}
			return ""
		}
		got := environ()
		for deadline := time.Now().Add(10 * time.Second); got != tc.want && time.Now().Before(deadline); got = environ() {
			time.Sleep(20 * time.Millisecond)
		}
		// A restart comes first thing: after a while without one, there is none.
		time.Sleep(300 * time.Millisecond)
		got = environ()
		cmd.Process.Kill()
		cmd.Wait()
		if got != tc.want {
			t.Errorf("%s, GODEBUG=%q given: the process runs with GODEBUG=%q, want %q", tc.args[0], tc.given, got, tc.want)
		}
	}
}
