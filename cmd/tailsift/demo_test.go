package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestDemo runs the quick start's first command as a user meets it, on a
// smaller backlog and with its output in a pipe: the summary must agree
// with what it produced, the output must read line by line (no carriage
// returns), and the DuckDB query it prints must run on the files it wrote
// and find the traces and spans it says it kept.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if err := cmdDemo(context.Background(), []string{"--dir", dir, "--traces", "3000"}, &out, testLogWriter{t}); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	text := out.String()
	t.Log(text)
	if strings.Contains(text, "\r") {
		t.Error("progress redrawn with carriage returns in a pipe")
	}
	number := func(re string) int {
		t.Helper()
		m := regexp.MustCompile(re).FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("no %q in the output", re)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	in, produced := number(`spans in:\s+(\d+) `), number(`\((\d+) produced\)`)
	if in != produced || in == 0 {
		t.Errorf("spans in %d, produced %d", in, produced)
	}
	msgs := number(`as (\d+) messages`)
	if line := "\nconsumed " + strconv.Itoa(msgs) + "/" + strconv.Itoa(msgs) + " messages"; !strings.Contains(text, line) {
		t.Errorf("no progress line %q", line[1:])
	}
	keptSpans := number(`spans kept:\s+(\d+)`)
	if files := number(`files written: (\d+) Parquet files`); files < 1 {
		t.Errorf("%d files written", files)
	}
	// The traces kept by reason, as the summary lists them.
	kept := map[string]int{}
	section := text[strings.Index(text, "traces kept by reason:"):strings.Index(text, "traces dropped:")]
	for _, line := range strings.Split(section, "\n")[1:] {
		if f := strings.Fields(line); len(f) == 2 {
			kept[f[0]], _ = strconv.Atoi(f[1])
		}
	}
	for _, reason := range []string{"error", "latency>=2s", "probabilistic/5%"} {
		if kept[reason] == 0 {
			t.Errorf("no traces kept for %s: %v", reason, kept)
		}
	}

	// The query the demo prints, run as printed.
	m := regexp.MustCompile(`(?s)duckdb -c "(.*?)"\n`).FindStringSubmatch(text)
	if m == nil {
		t.Fatal("no DuckDB query in the output")
	}
	rows, err := openDuckDB(t).Query(m[1])
	if err != nil {
		t.Fatalf("the printed query: %v\n%s", err, m[1])
	}
	defer rows.Close()
	found, spans := map[string]int{}, 0
	for rows.Next() {
		var reason string
		var traces, n int
		var estimated float64
		if err := rows.Scan(&reason, &traces, &n, &estimated); err != nil {
			t.Fatal(err)
		}
		found[reason] = traces
		spans += n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(found) != len(kept) || spans != keptSpans {
		t.Errorf("the archive holds %v traces and %d spans; the summary says %v and %d", found, spans, kept, keptSpans)
	}
	for reason, n := range kept {
		if found[reason] != n {
			t.Errorf("%s: %d traces in the archive, %d in the summary", reason, found[reason], n)
		}
	}
}
