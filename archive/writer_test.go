package archive

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/tailsift/tailsift/router"
	"github.com/tailsift/tailsift/sampler"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

var (
	tidA = pcommon.TraceID{0xa1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	tidB = pcommon.TraceID{0xb2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
)

// testTraces builds two traces: A (three spans over two services, with an
// error, an event, a link and promoted attributes) and B (one span).
func testTraces(start time.Time) ptrace.Traces {
	td := ptrace.NewTraces()
	ts := func(d time.Duration) pcommon.Timestamp { return pcommon.NewTimestampFromTime(start.Add(d)) }

	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "frontend")
	rs.Resource().Attributes().PutStr("k8s.namespace.name", "shop")
	rs.Resource().Attributes().PutStr("host.name", "web-1")
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName("otelhttp")
	ss.Scope().SetVersion("0.60.0")
	root := ss.Spans().AppendEmpty()
	root.SetTraceID(tidA)
	root.SetSpanID(pcommon.SpanID{1, 1, 1, 1, 1, 1, 1, 1})
	root.SetName("GET /cart")
	root.SetKind(ptrace.SpanKindServer)
	root.SetStartTimestamp(ts(0))
	root.SetEndTimestamp(ts(250 * time.Millisecond))
	root.Attributes().PutStr("http.request.method", "GET")
	root.Attributes().PutStr("http.route", "/cart")
	root.Attributes().PutInt("http.response.status_code", 500)
	root.Attributes().PutStr("user.tier", "gold")
	root.TraceState().FromRaw("ot=th:8")
	b := ss.Spans().AppendEmpty()
	b.SetTraceID(tidB)
	b.SetSpanID(pcommon.SpanID{3, 3, 3, 3, 3, 3, 3, 3})
	b.SetName("GET /health")
	b.SetStartTimestamp(ts(time.Second))
	b.SetEndTimestamp(ts(time.Second + time.Millisecond))

	rs2 := td.ResourceSpans().AppendEmpty()
	rs2.Resource().Attributes().PutStr("service.name", "cart")
	ss2 := rs2.ScopeSpans().AppendEmpty()
	child := ss2.Spans().AppendEmpty()
	child.SetTraceID(tidA)
	child.SetSpanID(pcommon.SpanID{2, 2, 2, 2, 2, 2, 2, 2})
	child.SetParentSpanID(pcommon.SpanID{1, 1, 1, 1, 1, 1, 1, 1})
	child.SetName("SELECT cart")
	child.SetKind(ptrace.SpanKindClient)
	child.SetStartTimestamp(ts(10 * time.Millisecond))
	child.SetEndTimestamp(ts(200 * time.Millisecond))
	child.Attributes().PutStr("db.system", "postgresql")
	child.Attributes().PutDouble("db.rows", 2.5)
	child.Status().SetCode(ptrace.StatusCodeError)
	child.Status().SetMessage("connection reset")
	ev := child.Events().AppendEmpty()
	ev.SetName("exception")
	ev.SetTimestamp(ts(199 * time.Millisecond))
	ev.Attributes().PutStr("exception.type", "io.EOF")
	ln := child.Links().AppendEmpty()
	ln.SetTraceID(tidB)
	ln.SetSpanID(pcommon.SpanID{3, 3, 3, 3, 3, 3, 3, 3})
	ln.Attributes().PutBool("retry", true)
	return td
}

// keptTraces scans td like the router does and groups its spans as the
// sampler would emit them.
func keptTraces(t *testing.T, td ptrace.Traces, src *sampler.Pending, decided time.Time) []*sampler.Kept {
	t.Helper()
	raw, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		t.Fatal(err)
	}
	return keptRecord(t, raw, src, decided)
}

// keptRecord is keptTraces for an encoded TracesData.
func keptRecord(t *testing.T, raw []byte, src *sampler.Pending, decided time.Time) []*sampler.Kept {
	t.Helper()
	sc, _ := router.NewScanner("")
	items, err := sc.Scan(raw, src)
	if err != nil {
		t.Fatal(err)
	}
	src.Add(len(items))
	byID := map[sampler.TraceID]*sampler.Kept{}
	var out []*sampler.Kept
	for _, it := range items {
		k := byID[it.TraceID]
		if k == nil {
			k = &sampler.Kept{ID: it.TraceID, SampleRate: 20, Reason: "probabilistic/5%", DecidedAt: decided,
				RootService: "frontend", RootName: "GET /cart", Start: it.Span.Start, DurationNs: 250e6, HasError: true}
			byID[it.TraceID] = k
			out = append(out, k)
		}
		k.Spans = append(k.Spans, it.Span)
		k.SpanCount = len(k.Spans)
	}
	return out
}

func readRows(t *testing.T, dir string) (map[string]Row, []string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "dt=*", "hour=*", "*.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]Row{}
	for _, f := range files {
		rs, err := parquet.ReadFile[Row](f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, r := range rs {
			rows[r.SpanID] = r
		}
	}
	return rows, files
}

func TestWriterRoundTrip(t *testing.T) {
	dir := t.TempDir()
	w, err := New(context.Background(), Config{URL: "file://" + dir, NodeID: "n1", RollAge: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 3, 4, 5, 30, 59, 123456789, time.UTC)
	decided := start.Add(3 * time.Second)
	var src sampler.Pending
	kept := keptTraces(t, testTraces(start), &src, decided)
	in := make(chan *sampler.Kept)
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background(), in) }()
	for _, k := range kept {
		in <- k
	}
	in <- &sampler.Kept{DecidedAt: decided} // an empty trace: the previous ones were taken
	if src.Settled() {
		t.Fatal("spans settled before their file was closed")
	}
	if _, files := readRows(t, dir); len(files) != 0 {
		t.Fatalf("complete files visible before close: %v", files)
	}
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !src.Settled() {
		t.Fatal("spans not settled after the archive closed its files")
	}

	rows, files := readRows(t, dir)
	if len(files) != 1 || !strings.Contains(files[0], filepath.Join("dt=2026-03-04", "hour=5", "part-n1-")) {
		t.Fatalf("files = %v, want one under dt=2026-03-04/hour=5 named for the node", files)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*", "*", ".*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	if len(rows) != 3 {
		t.Fatalf("got %d rows, want 3", len(rows))
	}
	r := rows["0101010101010101"]
	str := func(p *string) string {
		if p == nil {
			return "<nil>"
		}
		return *p
	}
	if r.TraceID != "a10102030405060708090a0b0c0d0e0f" || r.ParentSpanID != "" || r.ServiceName != "frontend" ||
		r.Name != "GET /cart" || r.Kind != "SERVER" || r.StatusCode != "UNSET" || r.TraceState != "ot=th:8" ||
		r.StartTimeUnixNano != start.UnixNano() || r.StartTime != start.UnixMicro() || r.DurationNs != 250e6 ||
		str(r.HTTPRequestMethod) != "GET" || str(r.HTTPRoute) != "/cart" || r.HTTPResponseStatusCode == nil ||
		*r.HTTPResponseStatusCode != 500 || str(r.K8sNamespaceName) != "shop" || r.Attributes["user.tier"] != "gold" ||
		r.ResourceAttributes["host.name"] != "web-1" || r.ScopeName != "otelhttp" || r.ScopeVersion != "0.60.0" ||
		r.SampleRate != 20 || r.KeepReason != "probabilistic/5%" || r.DecidedAt != decided.UnixMicro() ||
		r.TraceRootService != "frontend" || r.TraceRootName != "GET /cart" || r.TraceSpanCount != 2 || !r.TraceHasError {
		t.Errorf("root row = %+v", r)
	}
	if _, dup := r.Attributes["http.route"]; dup {
		t.Error("promoted attribute also stored in the attributes map")
	}
	c := rows["0202020202020202"]
	if c.ParentSpanID != "0101010101010101" || c.ServiceName != "cart" || c.Kind != "CLIENT" || c.StatusCode != "ERROR" ||
		c.StatusMessage != "connection reset" || str(c.DBSystem) != "postgresql" || c.Attributes["db.rows"] != "2.5" ||
		c.HTTPRoute != nil || len(c.Events) != 1 || c.Events[0].Name != "exception" ||
		c.Events[0].Attributes["exception.type"] != "io.EOF" || c.Events[0].TimeUnixNano != start.Add(199*time.Millisecond).UnixNano() ||
		len(c.Links) != 1 || c.Links[0].TraceID != "b20102030405060708090a0b0c0d0e0f" || c.Links[0].SpanID != "0303030303030303" ||
		c.Links[0].Attributes["retry"] != "true" {
		t.Errorf("child row = %+v", c)
	}
}

func TestWriterRollsBySizeAndAge(t *testing.T) {
	dir := t.TempDir()
	in, done := startWriter(t, Config{URL: "file://" + dir, RollAge: time.Second, RollBytes: 1 << 20, RowGroupBytes: 64 << 10}, nil)
	start := time.Now().Add(-time.Minute)
	var src sampler.Pending
	// About 4 MiB of rows: several files by size. Each trace starts a
	// microsecond later, so no span is a copy of another.
	for i := 0; i < 4000; i++ {
		for _, k := range keptTraces(t, testTraces(start.Add(time.Duration(i)*time.Microsecond)), &src, start) {
			in <- k
		}
	}
	_, files := readRows(t, dir)
	if len(files) < 3 {
		t.Fatalf("%d files after ~4 MiB with 1 MiB rolls", len(files))
	}
	// The last file closes by age, with the channel still open.
	deadline := time.Now().Add(10 * time.Second)
	for !src.Settled() {
		if time.Now().After(deadline) {
			t.Fatal("open file not closed by age")
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	total := 0
	_, files = readRows(t, dir)
	for _, f := range files {
		pf, err := parquet.ReadFile[Row](f)
		if err != nil {
			t.Fatal(err)
		}
		total += len(pf)
	}
	if total != 4000*3 {
		t.Fatalf("read %d rows, wrote %d", total, 4000*3)
	}
}

// TestNewRemovesIncompleteFiles checks that a starting node deletes the
// temporary files its own crash left, and leaves alone those of other
// nodes sharing the directory, which may be writing them now.
func TestNewRemovesIncompleteFiles(t *testing.T) {
	dir := t.TempDir()
	part := filepath.Join(dir, "dt=2026-01-01", "hour=00")
	os.MkdirAll(part, 0o755)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tmp := func(node string) string {
		p := filepath.Join(part, "."+fileName(node, at)+".tmp")
		os.WriteFile(p, []byte("half a file"), 0o644)
		return p
	}
	stale, other, prefixed := tmp("n1"), tmp("n2"), tmp("n1-b")
	if _, err := New(context.Background(), Config{URL: "file://" + dir, NodeID: "n1"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("this node's temporary file still there: %v", err)
	}
	for _, p := range []string{other, prefixed} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("another node's temporary file was removed: %v", err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{URL: "ftp://x/y"}, "archive.url"},
		{Config{URL: "s3:///prefix"}, "missing bucket"},
		{Config{URL: ""}, "archive.url"},
		{Config{URL: "file:///tmp/x", RollBytes: 10}, "archive.roll_bytes"},
		{Config{URL: "file:///tmp/x", RollAge: time.Millisecond}, "archive.roll_age"},
		{Config{URL: "file:///tmp/x", NodeID: "a/b"}, "node_id"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %q", tc.cfg, err, tc.want)
		}
	}
	for _, u := range []string{"file:///tmp/x", "file://./x", "relative/dir", "/abs/dir", "s3://bucket", "s3://bucket/a/b"} {
		c := Config{URL: u}
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%q) = %v", u, err)
		}
	}
}

func TestNewRejectsUnwritableDir(t *testing.T) {
	// Root writes anywhere, so use a path under a regular file.
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	if _, err := New(context.Background(), Config{URL: "file://" + f + "/sub"}, nil); err == nil {
		t.Fatal("New succeeded on a path under a regular file")
	}
}

// startWriter runs a Writer on a new channel; done reports Run's result.
func startWriter(t *testing.T, cfg Config, m *Metrics) (chan<- *sampler.Kept, <-chan error) {
	t.Helper()
	w, err := New(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	in := make(chan *sampler.Kept)
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background(), in) }()
	return in, done
}

// TestWriterRowGroupsSortedAndSized: kept traces arrive in decision order;
// every row group of the file holds them sorted by trace ID and, within a
// trace, by start time, even when a trace's late spans arrive as a second
// Kept after other traces, and even across the chunks a row group is
// decoded in. Row groups are cut near RowGroupBytes of rows although their
// spans wait encoded: the estimate from encoded bytes may not let one grow
// to several times the limit, nor cut it at a small fraction.
func TestWriterRowGroupsSortedAndSized(t *testing.T) {
	kept, spans := genKept(t, 3000)
	// Late spans: the earliest span of every trace of several spans arrives
	// again as its own Kept, a few traces later, as a late span of a kept
	// trace does. Its rows must still come first in its trace, in the same
	// row group as the rest of the trace.
	var (
		late    int
		arrival []*sampler.Kept
		pending []*sampler.Kept
	)
	for _, k := range kept {
		arrival = append(arrival, k)
		if len(pending) >= 3 {
			arrival = append(arrival, pending[0])
			pending = pending[1:]
		}
		if len(k.Spans) < 2 {
			continue
		}
		first := 0
		for i := range k.Spans {
			if k.Spans[i].Start < k.Spans[first].Start {
				first = i
			}
		}
		sp := k.Spans[first]
		k.Spans = slices.Delete(k.Spans, first, first+1)
		pending = append(pending, &sampler.Kept{ID: k.ID, Reason: k.Reason, DecidedAt: k.DecidedAt, Start: k.Start,
			SampleRate: k.SampleRate, Late: true, SpanCount: 1, Spans: []sampler.Span{sp}})
		late++
	}
	kept = append(arrival, pending...)
	const limit = 1 << 20
	files := writeKept(t, Config{NodeID: "n", RowGroupBytes: limit, RollBytes: 1 << 30, RollAge: time.Hour}, kept)
	if len(files) != 1 {
		t.Fatalf("%d files, want 1", len(files))
	}
	pf := openParquet(t, files[0])
	groups := pf.RowGroups()
	if len(groups) < 4 {
		t.Fatalf("%d row groups for %d spans at a limit of %d bytes: rows are not cut into row groups", len(groups), spans, limit)
	}
	total, lateRows := 0, 0
	for g, rg := range groups {
		rows := make([]Row, rg.NumRows())
		r := parquet.NewGenericRowGroupReader[Row](rg)
		n, err := r.Read(rows)
		if err != nil && err != io.EOF || n != len(rows) {
			t.Fatalf("row group %d: read %d of %d rows: %v", g, n, len(rows), err)
		}
		total += n
		for i := 1; i < n; i++ {
			a, b := &rows[i-1], &rows[i]
			if a.TraceID > b.TraceID || a.TraceID == b.TraceID && a.StartTimeUnixNano > b.StartTimeUnixNano {
				t.Fatalf("row group %d, rows %d and %d out of order: %s@%d before %s@%d", g, i-1, i, a.TraceID, a.StartTimeUnixNano, b.TraceID, b.StartTimeUnixNano)
			}
		}
		for i := range rows {
			if rows[i].Late {
				lateRows++
			}
		}
	}
	if total != spans || lateRows != late {
		t.Fatalf("%d rows, %d of them late; want %d and %d", total, lateRows, spans, late)
	}
	// Each row group but the last holds about limit bytes of rows, by the
	// rows' own size (rowBatch.size), which the writer only estimates while
	// their spans wait encoded.
	var all rowBatch
	for _, k := range kept {
		if err := newRowBuilder(nil, nil).appendTrace(&all, k); err != nil {
			t.Fatal(err)
		}
	}
	perRow := float64(all.size) / float64(spans)
	for g, rg := range groups[:len(groups)-1] {
		if got := float64(rg.NumRows()) * perRow; got < limit/2 || got > 2*limit {
			t.Errorf("row group %d: %d rows, about %.0f bytes of rows for a limit of %d", g, rg.NumRows(), got, limit)
		}
	}
}

// openParquet opens a Parquet file for reading, closed at the end of the test.
func openParquet(t *testing.T, path string) *parquet.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	return pf
}
