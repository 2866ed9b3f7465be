package archive

import (
	"context"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tailsift/tailsift/sampler"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// randomKept returns n kept traces of 4 spans each with random IDs.
func randomKept(t *testing.T, r *rand.Rand, n int, start time.Time, src *sampler.Pending) []*sampler.Kept {
	t.Helper()
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "checkout")
	ss := rs.ScopeSpans().AppendEmpty()
	for i := 0; i < n; i++ {
		var tid pcommon.TraceID
		for j := range tid {
			tid[j] = byte(r.Uint32())
		}
		var parent pcommon.SpanID
		for s := 0; s < 4; s++ {
			sp := ss.Spans().AppendEmpty()
			sp.SetTraceID(tid)
			var sid pcommon.SpanID
			for j := range sid {
				sid[j] = byte(r.Uint32())
			}
			sid[0] |= 1
			sp.SetSpanID(sid)
			sp.SetParentSpanID(parent)
			if s == 0 {
				parent = sid
			}
			sp.SetName("op")
			sp.SetStartTimestamp(pcommon.NewTimestampFromTime(start.Add(time.Duration(s) * time.Millisecond)))
			sp.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(10 * time.Millisecond)))
			sp.Attributes().PutStr("http.route", "/pay")
		}
	}
	return keptTraces(t, td, src, start)
}

func TestFindTrace(t *testing.T) {
	dir := t.TempDir()
	in, done := startWriter(t, Config{URL: "file://" + dir, RollAge: time.Hour, RollBytes: 8 << 20, RowGroupBytes: 1 << 20}, nil)
	r := rand.New(rand.NewPCG(3, 4))
	start := time.Date(2026, 5, 1, 10, 15, 0, 0, time.UTC)
	var src sampler.Pending
	var ids []sampler.TraceID
	for b := 0; b < 20; b++ {
		for _, k := range randomKept(t, r, 1000, start.Add(time.Duration(b)*5*time.Minute), &src) {
			ids = append(ids, k.ID)
			in <- k
		}
	}
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st, err := OpenStore(context.Background(), "file://"+dir, S3Config{})
	if err != nil {
		t.Fatal(err)
	}
	parts, err := Partitions(context.Background(), st)
	if err != nil || len(parts) != 2 {
		t.Fatalf("partitions = %v, %v; want 2 (10:00 and 11:00)", parts, err)
	}
	for _, id := range []sampler.TraceID{ids[0], ids[7777], ids[len(ids)-1]} {
		want := hex.EncodeToString(id[:])
		rows, stats, err := FindTrace(context.Background(), st, want, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 4 {
			t.Fatalf("trace %s: found %d rows, want 4 (stats %+v)", want, len(rows), stats)
		}
		for _, row := range rows {
			if row.TraceID != want {
				t.Fatalf("found a row of trace %s", row.TraceID)
			}
		}
		t.Logf("trace %s: %+v", want, stats)
		if stats.RowGroupsRead > 2 || stats.Rows > 20_000 {
			t.Errorf("lookup read %d of %d row groups and %d rows: pruning does not work", stats.RowGroupsRead, stats.RowGroups, stats.Rows)
		}
	}
	// Time pruning: the 10:00 partition alone.
	rows, stats, err := FindTrace(context.Background(), st, hex.EncodeToString(ids[0][:]),
		PartitionPrefixes(start, start.Add(10*time.Minute)))
	if err != nil || len(rows) != 4 || stats.Files >= 4 {
		t.Fatalf("pruned lookup: %d rows, %+v, %v", len(rows), stats, err)
	}
	// A trace that is not there.
	rows, _, err = FindTrace(context.Background(), st, "00000000000000000000000000000001", nil)
	if err != nil || len(rows) != 0 {
		t.Fatalf("absent trace: %d rows, %v", len(rows), err)
	}
}

// TestPartitionPrefixes: an hour before 10 is looked up under both its
// forms, the zero-padded one of older archives too.
func TestPartitionPrefixes(t *testing.T) {
	from := time.Date(2026, 5, 1, 9, 59, 0, 0, time.UTC)
	got := PartitionPrefixes(from, from.Add(2*time.Hour))
	want := []string{"dt=2026-05-01/hour=11/", "dt=2026-05-01/hour=10/", "dt=2026-05-01/hour=9/", "dt=2026-05-01/hour=09/"}
	if !slices.Equal(got, want) {
		t.Fatalf("prefixes %q, want %q", got, want)
	}
}

// TestPartitionsParsesBothForms: both forms of an hour are one partition;
// names that only look like the layout are not partitions.
func TestPartitionsParsesBothForms(t *testing.T) {
	dir := t.TempDir()
	for _, key := range []string{"dt=2026-05-01/hour=06/a.parquet", "dt=2026-05-01/hour=6/b.parquet", "dt=2026-05-01/hour=13/c.parquet",
		"dt=2026-05-01/hour=006/d.parquet", "dt=2026-05-01/hour=24/e.parquet", "dt=2026-05-01/hour=6x/f.parquet"} {
		p := filepath.Join(dir, filepath.FromSlash(key))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st, _ := OpenStore(context.Background(), "file://"+dir, S3Config{})
	parts, err := Partitions(context.Background(), st)
	if err != nil || len(parts) != 2 {
		t.Fatalf("partitions %+v, %v; want 2", parts, err)
	}
	if p := parts[0]; p.Prefix != "dt=2026-05-01/hour=6/" || p.String() != "dt=2026-05-01/hour=06/ + dt=2026-05-01/hour=6/" ||
		len(p.Keys) != 2 || p.Bytes != 2 {
		t.Errorf("hour 6: %+v", p)
	}
	if p := parts[1]; p.Prefix != "dt=2026-05-01/hour=13/" || p.String() != p.Prefix || len(p.Keys) != 1 {
		t.Errorf("hour 13: %+v", p)
	}
}

func TestPlanRetention(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 30, 0, 0, time.UTC)
	var parts []Partition
	for h := 48; h >= 0; h-- {
		parts = append(parts, Partition{Prefix: now.Add(-time.Duration(h) * time.Hour).Format("dt=2006-01-02/hour=15/"),
			Hour: now.Add(-time.Duration(h) * time.Hour).Truncate(time.Hour), Bytes: 100})
	}
	p := PlanRetention(parts, 24*time.Hour, 0, now)
	// Hours ending more than 24h ago: the hour starting 25h before 12:00 and earlier.
	if len(p.Delete) != 24 || p.Keep[0].Hour != now.Truncate(time.Hour).Add(-24*time.Hour) {
		t.Fatalf("by age: delete %d, first kept %v", len(p.Delete), p.Keep[0].Hour)
	}
	p = PlanRetention(parts, 0, 1000, now)
	if len(p.Delete) != 39 || p.KeptBytes != 1000 || p.Unsatisfied {
		t.Fatalf("by size: delete %d, kept %d bytes", len(p.Delete), p.KeptBytes)
	}
	p = PlanRetention(parts, 0, 50, now)
	if len(p.Keep) != 1 || !p.Unsatisfied {
		t.Fatalf("current hour must stay: keep %d, unsatisfied %v", len(p.Keep), p.Unsatisfied)
	}
	if p := PlanRetention(parts, 0, 0, now); len(p.Delete) != 0 {
		t.Fatal("no limits deleted something")
	}
}

func TestRetentionDeletesPartitions(t *testing.T) {
	dir := t.TempDir()
	in, done := startWriter(t, Config{URL: "file://" + dir}, nil)
	r := rand.New(rand.NewPCG(5, 6))
	var src sampler.Pending
	now := time.Now().UTC()
	for h := 5; h >= 0; h-- {
		for _, k := range randomKept(t, r, 100, now.Add(-time.Duration(h)*time.Hour), &src) {
			in <- k
		}
	}
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, _ := OpenStore(ctx, "file://"+dir, S3Config{})
	parts, _ := Partitions(ctx, st)
	if len(parts) != 6 {
		t.Fatalf("%d partitions, want 6", len(parts))
	}
	plan := PlanRetention(parts, 3*time.Hour, 0, now)
	if err := plan.Apply(ctx, st, nil); err != nil {
		t.Fatal(err)
	}
	left, _ := Partitions(ctx, st)
	if len(left) != 6-len(plan.Delete) || len(plan.Delete) < 2 {
		t.Fatalf("deleted %d, %d left", len(plan.Delete), len(left))
	}
	if left[0].Hour.Before(now.Add(-4 * time.Hour)) {
		t.Fatalf("an old partition survived: %v", left[0].Hour)
	}
}
