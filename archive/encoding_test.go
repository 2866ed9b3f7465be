package archive

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/tailsift/tailsift/sampler"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// TestDictionaryFallsBackToPlain writes span attribute values that never
// repeat, 2 MB of them in one row group: the dictionary-encoded value
// column must switch to PLAIN past its 1 MiB dictionary and every value
// must read back.
func TestDictionaryFallsBackToPlain(t *testing.T) {
	start := time.Now().Add(-time.Minute)
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "frontend")
	ss := rs.ScopeSpans().AppendEmpty()
	const n = 20_000
	want := map[string]string{}
	for i := range n {
		sp := ss.Spans().AppendEmpty()
		sp.SetTraceID(pcommon.TraceID{byte(i >> 8), byte(i), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14})
		sp.SetSpanID(pcommon.SpanID{byte(i >> 8), byte(i), 1, 1, 1, 1, 1, 1})
		sp.SetName("GET /item")
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(time.Millisecond)))
		url := fmt.Sprintf("https://shop.example/item/%08d?session=%064x", i, i*7919)
		sp.Attributes().PutStr("url.full", url)
		want[sp.SpanID().String()] = url
	}
	dir := t.TempDir()
	writeTraces(t, Config{URL: "file://" + dir}, td, start)
	files, _ := filepath.Glob(filepath.Join(dir, "dt=*", "hour=*", "*.parquet"))
	if len(files) != 1 {
		t.Fatalf("files: %v", files)
	}
	pf := openParquet(t, files[0])
	if len(pf.Metadata().RowGroups) != 1 {
		t.Fatalf("%d row groups, want 1", len(pf.Metadata().RowGroups))
	}
	// Count the value column's data pages with and without a dictionary.
	leaf, ok := pf.Schema().Lookup("attributes", "key_value", "value")
	if !ok {
		t.Fatal("no attributes.key_value.value column")
	}
	pages := pf.RowGroups()[0].ColumnChunks()[leaf.ColumnIndex].Pages()
	defer pages.Close()
	dict, plain := 0, 0
	for {
		p, err := pages.ReadPage()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if p.Dictionary() != nil {
			dict++
		} else {
			plain++
		}
		parquet.Release(p)
	}
	if dict == 0 || plain == 0 {
		t.Errorf("attribute values: %d dictionary-encoded pages, %d PLAIN; want both (PLAIN past the 1 MiB dictionary)", dict, plain)
	}
	rows, err := parquet.ReadFile[Row](files[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != n {
		t.Fatalf("read %d rows, wrote %d", len(rows), n)
	}
	for _, r := range rows {
		if got := r.Attributes["url.full"]; got != want[r.SpanID] {
			t.Fatalf("span %s: url.full %q, want %q", r.SpanID, got, want[r.SpanID])
		}
	}
}

// writeTraces runs a Writer with cfg over td, kept as decided at decided,
// until it has closed every file.
func writeTraces(t *testing.T, cfg Config, td ptrace.Traces, decided time.Time) {
	t.Helper()
	in, done := startWriter(t, cfg, nil)
	var src sampler.Pending
	for _, k := range keptTraces(t, td, &src, decided) {
		in <- k
	}
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
