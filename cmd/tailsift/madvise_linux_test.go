package main

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestProcessRestartsWithMadvFree: the command restarts itself with
// madvdontneed=0 in GODEBUG (the same process, so a supervisor's PID stays
// right), keeps the rest of GODEBUG, and leaves a GODEBUG that already sets
// madvdontneed as it is.
func TestProcessRestartsWithMadvFree(t *testing.T) {
	for _, tc := range []struct{ given, want string }{
		{"", "madvdontneed=0"},
		{"gctrace=0", "gctrace=0,madvdontneed=0"},
		{"madvdontneed=1", "madvdontneed=1"},
	} {
		cmd := tailsiftCmd("broker", "-addr", "127.0.0.1:0")
		cmd.Env = append(cmd.Env, "GODEBUG="+tc.given)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		got := ""
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			environ, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/environ")
			if err != nil {
				t.Fatal(err)
			}
			got = ""
			for _, kv := range bytes.Split(environ, []byte{0}) {
				if v, ok := strings.CutPrefix(string(kv), "GODEBUG="); ok {
					got = v
				}
			}
			if got == tc.want {
				break
			}
		}
		cmd.Process.Kill()
		cmd.Wait()
		if got != tc.want {
			t.Errorf("GODEBUG=%q given: the process runs with GODEBUG=%q, want %q", tc.given, got, tc.want)
		}
	}
}
