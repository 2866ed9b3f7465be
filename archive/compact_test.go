package archive

import (
	"context"
	"encoding/hex"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/tailsift/tailsift/sampler"
)

func TestCompactMergesAndDeduplicates(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 2, 3, 4, 10, 0, 0, time.UTC)
	var src sampler.Pending
	// Three runs over the same partition; the second re-archives the first
	// run's traces, as a node does after a crash.
	r := rand.New(rand.NewPCG(8, 9))
	first := randomKept(t, r, 300, start, &src)
	for run := 0; run < 3; run++ {
		batch := randomKept(t, r, 300, start, &src)
		if run == 1 {
			batch = append(batch, randomKept(t, rand.New(rand.NewPCG(8, 9)), 300, start, &src)...) // same IDs as first
		}
		if run == 0 {
			batch = first
		}
		archiveKept(t, Config{URL: "file://" + dir, RollBytes: 1 << 20, RowGroupBytes: 64 << 10}, batch)
	}
	ctx := context.Background()
	st, _ := OpenStore(ctx, "file://"+dir, S3Config{})
	parts, err := Partitions(ctx, st)
	if err != nil || len(parts) != 1 {
		t.Fatalf("partitions %v, %v", parts, err)
	}
	before := countRows(t, dir)
	res, err := Compact(ctx, st, parts[0], 0, "t")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.FilesBefore < 3 || res.FilesAfter != 1 || res.Duplicates != 1200 || res.Rows != before-1200 {
		t.Fatalf("compaction: %+v (rows before %d)", res, before)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "dt=*", "hour=*", "*.parquet"))
	if len(files) != 1 || !strings.Contains(files[0], "part-compact-t-") {
		t.Fatalf("files after: %v", files)
	}
	if hidden, _ := filepath.Glob(filepath.Join(dir, "dt=*", ".*")); len(hidden) != 0 {
		t.Fatalf("staging left behind: %v", hidden)
	}
	rows, err := parquet.ReadFile[Row](files[0])
	if err != nil {
		t.Fatal(err)
	}
	seen := map[[2]string]bool{}
	for i, row := range rows {
		k := [2]string{row.TraceID, row.SpanID}
		if seen[k] {
			t.Fatalf("duplicate span %v after compaction", k)
		}
		seen[k] = true
		if i > 0 && rows[i-1].TraceID > row.TraceID {
			t.Fatalf("rows not sorted by trace_id at %d", i)
		}
	}
	if len(rows) != res.Rows {
		t.Fatalf("file has %d rows, result says %d", len(rows), res.Rows)
	}
	// Compacting again finds nothing to do; lookups still work.
	parts, _ = Partitions(ctx, st)
	if res, err := Compact(ctx, st, parts[0], 0, "t"); err != nil || res.Skipped == "" {
		t.Fatalf("second compaction: %+v, %v", res, err)
	}
	id := rows[len(rows)/2].TraceID
	found, _, err := FindTrace(ctx, st, id, nil)
	if err != nil || len(found) != 4 {
		t.Fatalf("lookup after compaction: %d rows, %v", len(found), err)
	}
}

// TestCompactKeepsTheWholeDecision archives each trace twice, as a crash
// can: whole, and a piece of it decided on its own with the piece's trace
// columns. After compaction each span is there once, from the decision
// that saw the whole trace, whichever was decided first.
func TestCompactKeepsTheWholeDecision(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 2, 3, 4, 10, 0, 0, time.UTC)
	var src sampler.Pending
	wholes := randomKept(t, rand.New(rand.NewPCG(5, 6)), 200, start, &src)
	var pieces []*sampler.Kept
	for i, k := range wholes {
		k.Reason, k.DecidedAt = "error", start.Add(time.Minute)
		p := *k
		p.Spans = slices.Clone(k.Spans[1:3])
		src.Add(len(p.Spans))
		p.SpanCount, p.Reason, p.DurationNs, p.HasError = len(p.Spans), "probabilistic/5%", 1e6, false
		p.DecidedAt = start.Add(2 * time.Minute)
		if i%2 == 0 { // the piece decided first
			p.DecidedAt = start.Add(30 * time.Second)
		}
		pieces = append(pieces, &p)
	}
	for _, batch := range [][]*sampler.Kept{pieces[:100], wholes, pieces[100:]} {
		archiveKept(t, Config{URL: "file://" + dir, RollBytes: 1 << 20, RowGroupBytes: 64 << 10}, batch)
	}
	ctx := context.Background()
	st, _ := OpenStore(ctx, "file://"+dir, S3Config{})
	parts, _ := Partitions(ctx, st)
	if len(parts) != 1 {
		t.Fatalf("partitions %v", parts)
	}
	res, err := Compact(ctx, st, parts[0], 0, "t")
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicates != 400 || res.Rows != 800 {
		t.Fatalf("compaction: %+v, want 800 rows kept and 400 duplicates dropped", res)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "dt=*", "hour=*", "*.parquet"))
	rows, err := parquet.ReadFile[Row](files[0])
	if err != nil || len(files) != 1 {
		t.Fatalf("%d files, %v", len(files), err)
	}
	perTrace := map[string]int{}
	for _, row := range rows {
		perTrace[row.TraceID]++
		if row.KeepReason != "error" || row.TraceSpanCount != 4 || row.DecidedAt != start.Add(time.Minute).UnixMicro() {
			t.Fatalf("trace %s span %s kept from the piece's decision: reason %q, span count %d, decided %d",
				row.TraceID, row.SpanID, row.KeepReason, row.TraceSpanCount, row.DecidedAt)
		}
	}
	if len(perTrace) != 200 {
		t.Fatalf("%d traces after compaction, want 200", len(perTrace))
	}
	for id, n := range perTrace {
		if n != 4 {
			t.Fatalf("trace %s has %d rows, want 4", id, n)
		}
	}
}

// archiveKept runs a Writer with cfg over batch until it has closed its
// files.
func archiveKept(t *testing.T, cfg Config, batch []*sampler.Kept) {
	t.Helper()
	in, done := startWriter(t, cfg, nil)
	for _, k := range batch {
		in <- k
	}
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestCompactMergesHourForms: an hour whose files are partly under the
// zero-padded hour=04 of older archives and partly under hour=4, with
// spans archived under both, is listed as one partition and compacted into
// hour=4 alone, each span once; lookups find the trace in either form.
func TestCompactMergesHourForms(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 2, 3, 4, 10, 0, 0, time.UTC)
	var src sampler.Pending
	cfg := Config{URL: "file://" + dir, RollBytes: 1 << 20, RowGroupBytes: 64 << 10}
	// An older node archived padded and first; this one archived fresh and
	// first again, as after a crash.
	first := randomKept(t, rand.New(rand.NewPCG(8, 9)), 200, start, &src)
	archiveKept(t, cfg, first)
	padded, unpadded := filepath.Join(dir, "dt=2026-02-03", "hour=04"), filepath.Join(dir, "dt=2026-02-03", "hour=4")
	if err := os.Rename(unpadded, padded); err != nil {
		t.Fatal(err)
	}
	fresh := randomKept(t, rand.New(rand.NewPCG(10, 11)), 200, start, &src)
	archiveKept(t, cfg, append(fresh, randomKept(t, rand.New(rand.NewPCG(8, 9)), 200, start, &src)...))

	ctx := context.Background()
	st, _ := OpenStore(ctx, "file://"+dir, S3Config{})
	parts, err := Partitions(ctx, st)
	if err != nil || len(parts) != 1 {
		t.Fatalf("partitions %v, %v; want one", parts, err)
	}
	p := parts[0]
	want := []string{"dt=2026-02-03/hour=04/", "dt=2026-02-03/hour=4/"}
	if p.Prefix != "dt=2026-02-03/hour=4/" || !slices.Equal(p.Prefixes, want) || !p.Hour.Equal(start.Truncate(time.Hour)) {
		t.Fatalf("partition %+v", p)
	}
	oldID, newID := hex.EncodeToString(first[0].ID[:]), hex.EncodeToString(fresh[0].ID[:])
	for _, id := range []string{oldID, newID} {
		rows, _, err := FindTrace(ctx, st, id, PartitionPrefixes(start, start))
		if err != nil || len(rows) != 4 && id == newID || len(rows) != 8 && id == oldID {
			t.Fatalf("lookup of %s before compaction: %d rows, %v", id, len(rows), err)
		}
	}

	res, err := Compact(ctx, st, p, 0, "t")
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicates != 800 || res.Rows != 1600 || res.FilesAfter != 1 {
		t.Fatalf("compaction: %+v; want 1600 rows kept, 800 duplicates", res)
	}
	if _, err := os.Stat(padded); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the padded partition is still there: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "dt=*", "hour=*", "*.parquet"))
	if len(files) != 1 || filepath.Dir(files[0]) != unpadded || countRows(t, dir) != 1600 {
		t.Fatalf("files after: %v, %d rows", files, countRows(t, dir))
	}
	for _, id := range []string{oldID, newID} {
		rows, _, err := FindTrace(ctx, st, id, PartitionPrefixes(start, start))
		if err != nil || len(rows) != 4 {
			t.Fatalf("lookup of %s after compaction: %d rows, %v", id, len(rows), err)
		}
	}
	parts, _ = Partitions(ctx, st)
	if len(parts) != 1 || !parts[0].Compacted() {
		t.Fatalf("after compaction: %+v", parts)
	}
}

// TestCompactMovesPaddedHour: an hour archived only under the padded form
// moves to the unpadded one, even when it is one compacted file already.
func TestCompactMovesPaddedHour(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 2, 3, 7, 10, 0, 0, time.UTC)
	var src sampler.Pending
	archiveKept(t, Config{URL: "file://" + dir}, randomKept(t, rand.New(rand.NewPCG(1, 2)), 50, start, &src))
	ctx := context.Background()
	st, _ := OpenStore(ctx, "file://"+dir, S3Config{})
	parts, _ := Partitions(ctx, st)
	if _, err := Compact(ctx, st, parts[0], 0, "t"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "dt=2026-02-03", "hour=7"), filepath.Join(dir, "dt=2026-02-03", "hour=07")); err != nil {
		t.Fatal(err)
	}
	parts, _ = Partitions(ctx, st)
	if len(parts) != 1 || parts[0].Compacted() {
		t.Fatalf("a compacted file under hour=07 is not compact in the current layout: %+v", parts)
	}
	res, err := Compact(ctx, st, parts[0], 0, "t")
	if err != nil || res.Skipped != "" || res.Rows != 200 {
		t.Fatalf("compaction: %+v, %v", res, err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "dt=*", "hour=*", "*.parquet"))
	if len(files) != 1 || !strings.Contains(files[0], filepath.Join("dt=2026-02-03", "hour=7", "part-compact-")) {
		t.Fatalf("files after: %v", files)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "dt=2026-02-03")); len(left) != 1 {
		t.Fatalf("left in dt=2026-02-03: %v", left)
	}
}
