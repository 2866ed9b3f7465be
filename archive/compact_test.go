package archive

import (
	"context"
	"math/rand/v2"
	"path/filepath"
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
		in, done := startWriter(t, Config{URL: "file://" + dir, RollBytes: 1 << 20, RowGroupBytes: 64 << 10}, nil)
		batch := randomKept(t, r, 300, start, &src)
		if run == 1 {
			batch = append(batch, randomKept(t, rand.New(rand.NewPCG(8, 9)), 300, start, &src)...) // same IDs as first
		}
		if run == 0 {
			batch = first
		}
		for _, k := range batch {
			in <- k
		}
		close(in)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
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
