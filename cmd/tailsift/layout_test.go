package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tailsift/tailsift/bench/gen"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// layoutRecord returns a record of 20 error traces of three spans each,
// whose trace IDs are marked with run.
func layoutRecord(t *testing.T, run byte) []byte {
	t.Helper()
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "layout")
	ss := rs.ScopeSpans().AppendEmpty()
	now := time.Now()
	for i := range 20 {
		for s := range 3 {
			sp := ss.Spans().AppendEmpty()
			sp.SetTraceID(pcommon.TraceID{0xab, run, byte(i)})
			sp.SetSpanID(pcommon.SpanID{0xab, byte(s + 1)})
			if s > 0 {
				sp.SetParentSpanID(pcommon.SpanID{0xab, 1})
			}
			sp.SetName("op")
			sp.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Duration(s) * time.Millisecond)))
			sp.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(10 * time.Millisecond)))
			sp.Status().SetCode(ptrace.StatusCodeError)
		}
	}
	b, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMixedHourLayouts: an archive holding partitions of the older
// zero-padded layout (hour=01) beside current ones (hour=1), some hours
// under both, is served by every tool: trace finds a trace under either
// form, retention deletes both forms by age, and after compaction DuckDB
// with hive_partitioning = true alone types hour as BIGINT and reads every
// span once.
func TestMixedHourLayouts(t *testing.T) {
	// Three archives of different traces, a, b and c, each written by a
	// node.
	runs := map[string][]string{}
	for i, name := range []string{"a", "b", "c"} {
		_, dir, _ := runRecords(t, gen.EncodingProto, 0, [][]byte{layoutRecord(t, byte(i+1))})
		runs[name] = parquetFiles(t, dir)
		if len(runs[name]) == 0 {
			t.Fatalf("run %s archived no files", name)
		}
	}
	// The latest hour before 10:00 that compaction's default --older-than
	// (2h) lets it take, and an hour long past retention's 30 days.
	recent := time.Now().UTC().Add(-3 * time.Hour).Truncate(time.Hour)
	for recent.Hour() >= 10 {
		recent = recent.Add(-time.Hour)
	}
	day := recent.Format("2006-01-02")
	hh, h := "hour=0"+itoa(recent.Hour()), "hour="+itoa(recent.Hour())
	// recent: a padded, b unpadded, c under both (archived twice);
	// 2020-01-02 03:00: c under both; 2020-01-02 07:00: c padded only.
	archive := t.TempDir()
	place := func(files []string, dirs ...string) {
		t.Helper()
		for _, d := range dirs {
			d = filepath.Join(archive, filepath.FromSlash(d))
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, f := range files {
				data, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(d, filepath.Base(f)), data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	place(runs["a"], "dt="+day+"/"+hh)
	place(runs["b"], "dt="+day+"/"+h)
	place(runs["c"], "dt="+day+"/"+hh, "dt="+day+"/"+h, "dt=2020-01-02/hour=03", "dt=2020-01-02/hour=3", "dt=2020-01-02/hour=07")

	db := openDuckDB(t)
	count := func(files []string) int {
		t.Helper()
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM read_parquet(['` + strings.Join(files, "','") + `'])`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	spans := map[string]int{"a": count(runs["a"]), "b": count(runs["b"]), "c": count(runs["c"])}
	// A trace of a (padded only) and one of b (unpadded only), with their
	// span counts.
	traceOf := func(files []string) (id string, n int) {
		t.Helper()
		err := db.QueryRow(`SELECT trace_id, count(*) FROM read_parquet(['`+strings.Join(files, "','")+`'])
			GROUP BY trace_id ORDER BY count(*) DESC, trace_id LIMIT 1`).Scan(&id, &n)
		if err != nil {
			t.Fatal(err)
		}
		return id, n
	}
	idA, nA := traceOf(runs["a"])
	idB, nB := traceOf(runs["b"])
	lookup := func(when string) {
		t.Helper()
		for _, tr := range []struct {
			id string
			n  int
		}{{idA, nA}, {idB, nB}} {
			for _, since := range [][]string{nil, {"--since", "24h"}} {
				code, out, errOut := runCLI(t, append([]string{"trace", tr.id, "--archive", "file://" + archive}, since...)...)
				if code != 0 || !strings.Contains(out, itoa(tr.n)+" spans ·") || strings.Contains(out, "duplicate") {
					t.Errorf("%s: trace %s %v: exit %d, want %d spans once:\n%s%s", when, tr.id, since, code, tr.n, errOut, out)
				}
			}
		}
	}
	lookup("before compaction")

	// Retention by age deletes the old hour under both forms, and the one
	// under the padded form alone.
	code, out, errOut := runCLI(t, "retention", "--archive", "file://"+archive, "--max-age", "30d")
	for _, want := range []string{
		"deleted dt=2020-01-02/hour=03/ + dt=2020-01-02/hour=3/ (" + itoa(2*len(runs["c"])) + " files",
		"deleted dt=2020-01-02/hour=07/ (" + itoa(len(runs["c"])) + " files",
		"deleted 2 of 3 partitions",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("retention: exit %d, no %q in:\n%s%s", code, want, errOut, out)
		}
	}
	if _, err := os.Stat(filepath.Join(archive, "dt=2020-01-02")); !os.IsNotExist(err) {
		t.Errorf("dt=2020-01-02 still there after retention: %v", err)
	}

	// Compaction merges the recent hour's two forms into hour=H.
	code, out, errOut = runCLI(t, "compact", "--archive", "file://"+archive)
	if code != 0 || !strings.Contains(out, "compacted 1 of 1 partitions") ||
		!strings.Contains(out, " "+itoa(spans["a"]+spans["b"]+spans["c"])+" rows, "+itoa(spans["c"])+" duplicate spans removed") {
		t.Fatalf("compact: exit %d:\n%s%s", code, errOut, out)
	}
	dirs, _ := filepath.Glob(filepath.Join(archive, "dt=*", "hour=*"))
	if len(dirs) != 1 || !regexp.MustCompile(`/dt=`+day+`/`+h+`$`).MatchString(filepath.ToSlash(dirs[0])) {
		t.Fatalf("partitions after compaction: %v, want dt=%s/%s alone", dirs, day, h)
	}
	var hourType string
	var rows, unique, inHour int
	err := db.QueryRow(`SELECT any_value(typeof(hour)), count(*), count(DISTINCT (trace_id, span_id)),
			count(*) FILTER (WHERE dt = DATE '`+day+`' AND hour = `+itoa(recent.Hour())+`)
		FROM read_parquet('`+archive+`/**/*.parquet', hive_partitioning = true)`).Scan(&hourType, &rows, &unique, &inHour)
	if err != nil {
		t.Fatal(err)
	}
	if want := spans["a"] + spans["b"] + spans["c"]; hourType != "BIGINT" || rows != want || unique != want || inHour != want {
		t.Errorf("after compaction DuckDB reads hour as %s, %d rows, %d distinct spans, %d in hour %d; want BIGINT and %d",
			hourType, rows, unique, inHour, recent.Hour(), want)
	}
	lookup("after compaction")
}
