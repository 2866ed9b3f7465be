package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/tailsift/tailsift/bench/gen"
)

// runCLI runs the tailsift command line as main does and returns its exit
// code and both streams.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, out, errOut := runCLI(t, args...)
		if code != 0 || errOut != "" {
			t.Fatalf("%v: exit %d, stderr %q", args, code, errOut)
		}
		// A test binary has no module version of its own: "(devel)".
		if !regexp.MustCompile(`^tailsift \S+.* go1\.\d+`).MatchString(out) {
			t.Errorf("%v printed %q", args, out)
		}
	}
}

// TestHelpOnStdout: help asked for is on standard output, so it can be
// paged, and says what a user needs: arguments, defaults with units, the
// configuration sections.
func TestHelpOnStdout(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"commands:", "version"}},
		{[]string{"help"}, []string{"commands:"}},
		{[]string{"run", "--help"}, []string{
			"\nkafka:\n", "\narchive:\n", "\nshort forms:\n",
			"--kafka-max-message-bytes SIZE  (default: 64MiB)",
			"--archive-roll-age DURATION  (default: 5m)",
			"--archive-url TEXT  (default: file://./tailsift-data)",
			"[kafka.brokers, TAILSIFT_KAFKA_BROKERS]",
			"--brokers = --kafka-brokers",
		}},
		{[]string{"trace", "-h"}, []string{"usage: tailsift trace <trace-id> [flags]", "--since DURATION"}},
		{[]string{"compact", "-h"}, []string{"--target-size SIZE  (default: 512MB)", "--older-than DURATION  (default: 2h)"}},
		{[]string{"broker", "--help"}, []string{"--max-message-bytes SIZE  (default: 16MiB)"}},
		{[]string{"config", "--help"}, []string{"usage: tailsift config check FILE"}},
		{[]string{"version", "--help"}, []string{"usage: tailsift version [flags]"}},
	}
	for _, tc := range tests {
		code, out, errOut := runCLI(t, tc.args...)
		if code != 0 || errOut != "" {
			t.Errorf("%v: exit %d, stderr %q", tc.args, code, errOut)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: no %q in the help:\n%s", tc.args, w, out)
			}
		}
	}
	// Run's own keys are listed by section, the short forms once, at the
	// end, not among them.
	_, out, _ := runCLI(t, "run", "--help")
	if i, j := strings.Index(out, "  --brokers "), strings.Index(out, "short forms:"); i >= 0 && i < j {
		t.Errorf("short form --brokers listed among the keys")
	}
}

// TestBadFlagIsOneLine: a mistake costs one line and a hint, not the list
// of every flag.
func TestBadFlagIsOneLine(t *testing.T) {
	for _, args := range [][]string{
		{"run", "--no-such-flag"},
		{"compact", "--archive", "file:///x", "--target-size", "lots"},
		{"gen", "--max-batch-bytes", "1MiBs"},
		{"retention", "--max-age", "soon"},
	} {
		code, out, errOut := runCLI(t, args...)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		hint := "run 'tailsift " + args[0] + " --help' for its flags"
		if code != 2 || out != "" || len(lines) != 2 || lines[1] != hint {
			t.Errorf("%v: exit %d, stdout %q, stderr:\n%s", args, code, out, errOut)
		}
	}
	code, _, errOut := runCLI(t, "frobnicate")
	if code != 2 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "tailsift --help") {
		t.Errorf("unknown command: exit %d, stderr %q", code, errOut)
	}
}

func TestSizeAndDurationSyntax(t *testing.T) {
	sizes := map[string]int64{
		"0": 0, "200_000": 200_000, "512B": 512, "4kB": 4000, "4KB": 4000, "16MB": 16e6, "4GB": 4e9, "2TB": 2e12,
		"4KiB": 4 << 10, "16MiB": 16 << 20, "1.5GiB": 3 << 29, "1TiB": 1 << 40, " 8 MiB ": 8 << 20,
	}
	for s, want := range sizes {
		if got, err := parseSize(s); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "4 GBs", "4gb", "-1MB", "1.5", "MiB", "4XB"} {
		if _, err := parseSize(s); err == nil {
			t.Errorf("parseSize(%q) accepted", s)
		}
	}
	durations := map[string]time.Duration{
		"500ms": 500 * time.Millisecond, "90m": 90 * time.Minute, "36h": 36 * time.Hour,
		"30d": 30 * 24 * time.Hour, "1.5d": 36 * time.Hour, "1d12h": 36 * time.Hour, "0s": 0,
	}
	for s, want := range durations {
		if got, err := parseDuration(s); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "3", "-1s", "d", "1dd", "soon"} {
		if _, err := parseDuration(s); err == nil {
			t.Errorf("parseDuration(%q) accepted", s)
		}
	}
	for d, want := range map[time.Duration]string{30 * time.Second: "30s", 5 * time.Minute: "5m", 90 * time.Minute: "1h30m",
		2 * time.Hour: "2h", 48 * time.Hour: "2d", 1500 * time.Millisecond: "1.5s"} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}

	for n, want := range map[int64]string{0: "0", 1000: "1kB", 1024: "1KiB", 64 << 20: "64MiB", 64e6: "64MB", 10 << 30: "10GiB", 200_000: "200kB", 1234: "1234"} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
	}

	// The same syntax for run's keys as for the other commands' flags.
	_, _, cfg, err := parseRunArgs([]string{"--kafka-fetch-max-bytes", "16MB", "--sampler-max-buffered-bytes", "4GB",
		"--archive-roll-age", "1d"}, func(string) string { return "" }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Kafka.FetchMaxBytes != 16e6 || cfg.Sampler.MaxBufferedBytes != 4e9 || cfg.Archive.RollAge != 24*time.Hour {
		t.Errorf("fetch %d, buffered %d, roll age %v", cfg.Kafka.FetchMaxBytes, cfg.Sampler.MaxBufferedBytes, cfg.Archive.RollAge)
	}
	// config check prints them as a file would hold them, and reads back
	// what it prints.
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("archive:\n  roll_age: 1d\n  roll_bytes: 64MB\nsampler:\n  max_wait: 90s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "config", "check", file)
	for _, w := range []string{"roll_age: 1d\n", "roll_bytes: 64MB\n", "max_wait: 1m30s\n", "max_message_bytes: 64MiB\n"} {
		if code != 0 || !strings.Contains(out, w) {
			t.Errorf("config check: exit %d, %s; no %q in:\n%s", code, errOut, w, out)
		}
	}
	if err := os.WriteFile(file, []byte(strings.ReplaceAll(out, "*****", "")), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, again, errOut := runCLI(t, "config", "check", file); code != 0 || again[strings.Index(again, "\n"):] != out[strings.Index(out, "\n"):] {
		t.Errorf("config check of its own output: exit %d, %s\n%s", code, errOut, again)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the broker starts, then stops at once
	var bout, berr bytes.Buffer
	if code := run(ctx, []string{"broker", "--addr", "127.0.0.1:0", "--max-message-bytes", "16MB", "--retention", "7d"}, &bout, &berr); code != 0 {
		t.Errorf("broker with 16MB: exit %d: %s", code, berr.String())
	}
}

// TestRetentionEchoesLimits: what retention prints names the limits as the
// user wrote them.
func TestRetentionEchoesLimits(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "dt=2020-01-02", "hour=03")
	if err := os.MkdirAll(old, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(old, "part-n-x.parquet"), make([]byte, 2000), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "retention", "--archive", "file://"+dir, "--max-age", "30d", "--dry-run")
	if code != 0 || !strings.Contains(out, "would delete dt=2020-01-02/hour=03/ (1 files, 2.0kB): older than 30d") {
		t.Errorf("exit %d, stderr %q, stdout:\n%s", code, errOut, out)
	}
}

// demoArchive runs the demo on a small backlog into a new directory and
// returns the directory and the demo's output.
func demoArchive(t *testing.T, dir string, traces string) string {
	t.Helper()
	var out bytes.Buffer
	if err := cmdDemo(context.Background(), []string{"--dir", dir, "--traces", traces}, &out, testLogWriter{t}); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	return out.String()
}

func parquetFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "dt=*", "hour=*", "*.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestArchiveToolsOnDuplicates runs the everyday tools on an archive the
// way users meet it: a demo run twice into one directory, a file archived
// twice (as a re-read after a restart does), compaction of the result.
func TestArchiveToolsOnDuplicates(t *testing.T) {
	dir := t.TempDir()
	first := demoArchive(t, dir, "300")
	spansKept := regexp.MustCompile(`spans kept:\s+(\d+)`)
	filesLine := regexp.MustCompile(`files written: (\d+) Parquet files`)

	// The Parquet footer names the build.
	files := parquetFiles(t, dir)
	if len(files) == 0 {
		t.Fatal("the demo wrote no files")
	}
	f, err := os.Open(files[0])
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	if cb := pf.Metadata().CreatedBy; !strings.HasPrefix(cb, "tailsift version devel") {
		t.Errorf("created_by %q", cb)
	}
	f.Close()

	// A second demo into the same directory says so and counts its own run.
	second := demoArchive(t, dir, "300")
	if !strings.Contains(second, "removed "+filesLine.FindStringSubmatch(first)[1]+" Parquet files of an earlier demo") {
		t.Errorf("the second demo did not say it cleared the first's files:\n%s", second)
	}
	if a, b := spansKept.FindStringSubmatch(first)[1], spansKept.FindStringSubmatch(second)[1]; a != b {
		t.Errorf("spans kept: first run %s, second %s (same seed)", a, b)
	}
	if got, want := len(parquetFiles(t, dir)), filesLine.FindStringSubmatch(second)[1]; itoa(got) != want {
		t.Errorf("%d files in the directory, the summary says %s", got, want)
	}

	// Archive one file twice, as at-least-once delivery can. The files
	// go into one partition, should the demo have run across an hour.
	files = parquetFiles(t, dir)
	for _, f := range files[1:] {
		if err := os.Rename(f, filepath.Join(filepath.Dir(files[0]), filepath.Base(f))); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(filepath.Dir(files[0]), "part-replayed-copy.parquet")
	if err := os.WriteFile(copyPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var id string
	var spans, rows int
	db := openDuckDB(t)
	if err := db.QueryRow(`SELECT count(*) FROM read_parquet('` + files[0] + `')`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	err = db.QueryRow(`SELECT trace_id, count(*) FROM read_parquet('`+files[0]+`')
		GROUP BY trace_id ORDER BY count(*) DESC, trace_id LIMIT 1`).Scan(&id, &spans)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "trace", id, "--archive", "file://"+dir)
	if code != 0 {
		t.Fatalf("trace: exit %d: %s%s", code, errOut, out)
	}
	if !strings.Contains(out, itoa(spans)+" spans ·") || !strings.Contains(out, itoa(spans)+" duplicate spans not shown") {
		t.Errorf("trace of %d spans, each archived twice:\n%s", spans, out)
	}
	if lines := strings.Count(out, "─ "); lines != spans {
		t.Errorf("%d spans printed, want %d:\n%s", lines, spans, out)
	}

	// The demo refuses to mix with files it did not write.
	var demoOut bytes.Buffer
	err = cmdDemo(context.Background(), []string{"--dir", dir, "--traces", "10"}, &demoOut, testLogWriter{t})
	if err == nil || !strings.Contains(err.Error(), "did not write") {
		t.Errorf("demo into a directory with another file: %v", err)
	}

	// The partition is this hour's: compact skips it and says why, in the
	// dry run as in the real run.
	_, dry, _ := runCLI(t, "compact", "--archive", "file://"+dir, "--dry-run")
	_, real, _ := runCLI(t, "compact", "--archive", "file://"+dir)
	for _, out := range []string{dry, real} {
		if !strings.Contains(out, "less than --older-than 2h ago") || !strings.Contains(out, "0 of 1 partitions") {
			t.Errorf("compact of a partition of this hour:\n%s", out)
		}
	}
	// An hour that ended long ago is compacted as the dry run said, and
	// loses its duplicates.
	hourDir := filepath.Dir(files[0])
	oldHour := filepath.Join(dir, "dt=2020-01-02", "hour=03")
	if err := os.MkdirAll(filepath.Dir(oldHour), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(hourDir, oldHour); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCLI(t, "compact", "--archive", "file://"+dir, "--older-than", "-1h", "--dry-run"); code != 2 || !strings.Contains(errOut, "must be") {
		t.Errorf("negative --older-than: exit %d, %s", code, errOut)
	}
	code, dry, errOut = runCLI(t, "compact", "--archive", "file://"+dir, "--dry-run")
	code2, real, errOut2 := runCLI(t, "compact", "--archive", "file://"+dir)
	if code != 0 || code2 != 0 || !strings.Contains(dry, "would compact 1 of 1 partitions") || !strings.Contains(real, "compacted 1 of 1 partitions") ||
		!strings.Contains(real, " "+itoa(rows)+" duplicate spans removed") {
		t.Errorf("compact of an old hour: exit %d/%d\n%s%s\n%s%s", code, code2, errOut, dry, errOut2, real)
	}
	_, dry, _ = runCLI(t, "compact", "--archive", "file://"+dir, "--dry-run")
	_, real, _ = runCLI(t, "compact", "--archive", "file://"+dir)
	for _, out := range []string{dry, real} {
		if !strings.Contains(out, "already compact") {
			t.Errorf("compact of a compacted partition:\n%s", out)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestDefaultBrokersWarned: a node whose brokers nobody named says so, and
// one whose brokers were named, even as the default address, does not.
func TestDefaultBrokersWarned(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(file, []byte("kafka:\n  brokers: [127.0.0.1:9092]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	noEnv := func(string) string { return "" }
	tests := []struct {
		args []string
		env  func(string) string
		warn bool
	}{
		{nil, noEnv, true},
		{[]string{"--log-level", "debug"}, noEnv, true},
		{[]string{"--brokers", "127.0.0.1:9092"}, noEnv, false},
		{[]string{"--kafka-brokers", "10.0.0.1:9092"}, noEnv, false},
		{[]string{"--config", file}, noEnv, false},
		{nil, func(k string) string {
			if k == "TAILSIFT_KAFKA_BROKERS" {
				return "127.0.0.1:9092"
			}
			return ""
		}, false},
	}
	for _, tc := range tests {
		_, _, cfg, err := parseRunArgs(tc.args, tc.env, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		log, _ := newLogger(LogConfig{Level: "info", Format: "text"}, &logs)
		warnDefaultBrokers(cfg, log)
		if got := strings.Contains(logs.String(), "level=WARN msg=\"no Kafka brokers configured"); got != tc.warn {
			t.Errorf("%v: warned %v, want %v: %s", tc.args, got, tc.warn, logs.String())
		}
	}
}

// TestJSONLogDurations: durations in JSON logs read as durations.
func TestJSONLogDurations(t *testing.T) {
	var logs bytes.Buffer
	log, err := newLogger(LogConfig{Level: "info", Format: "json"}, &logs)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("shutting down", "grace_period", 30*time.Second, "took", 1500*time.Millisecond)
	if !strings.Contains(logs.String(), `"grace_period":"30s","took":"1.5s"`) {
		t.Errorf("JSON log: %s", logs.String())
	}
}

// TestProgressExplainsOpenFiles: once Kafka is drained and every trace
// decided, a node whose kept spans wait in open archive files says so, and
// its progress line counts them, rather than showing nothing to do.
func TestProgressExplainsOpenFiles(t *testing.T) {
	b, client := startBroker(t, 2)
	logs := &syncBuffer{}
	startTestNodeLog(t, b.Addr(), "otlp_spans", t.TempDir(), func(c *Config) {
		c.Log.Level = "info"
		c.Log.ProgressInterval = 200 * time.Millisecond
		c.Archive.RollAge = time.Hour
	}, logs)
	if _, err := gen.Produce(context.Background(), client, "otlp_spans", gen.Config{Seed: 3, Traces: 200}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, func() bool {
		return strings.Contains(logs.String(), "kept spans wait in open archive files")
	})
	text := logs.String()
	if !strings.Contains(text, "roll_age=1h") || !regexp.MustCompile(`msg=progress .*lag_records=0 unsettled_records=[1-9]\d* oldest_unsettled=\S+ open_archive_files=[1-9]`).MatchString(text) {
		t.Errorf("no progress line showing unsettled records in open files:\n%s", text)
	}
}
