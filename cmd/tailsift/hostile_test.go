package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tailsift/tailsift/bench/gen"
	"github.com/tailsift/tailsift/internal/otlpwire"
	"github.com/tailsift/tailsift/internal/otlpwire/wiretest"
	"github.com/tailsift/tailsift/internal/parquetcheck"
	"github.com/tailsift/tailsift/router/broker"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// hostileTrace is a one-span error trace of hostile input: the policy keeps
// it, so the archive writes whatever it holds.
type hostileTrace struct {
	id    [16]byte
	field string // what is hostile in it
}

// hostileID returns the trace ID of hostile trace i, far from any the
// generator draws.
func hostileID(i int) [16]byte {
	return [16]byte{0xee, 0xee, 0xee, 0xee, 15: byte(i + 1)}
}

// spanParts are the parts of a one-span record that a test edits.
type spanParts struct {
	rs ptrace.ResourceSpans
	ss ptrace.ScopeSpans
	sp ptrace.Span
}

// hostileSpan returns a record of one root error span of trace id, as a
// service of its own, with edit applied to it (nil: none).
func hostileSpan(id [16]byte, edit func(spanParts)) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "hostile")
	rs.Resource().Attributes().PutStr("host.name", "h1")
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName("fuzzer")
	ss.Scope().SetVersion("1.0")
	sp := ss.Spans().AppendEmpty()
	sp.SetTraceID(id)
	sp.SetSpanID(pcommon.SpanID{0xee, 1})
	sp.SetName("hostile")
	now := time.Now()
	sp.SetStartTimestamp(pcommon.NewTimestampFromTime(now))
	sp.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Millisecond)))
	sp.Status().SetCode(ptrace.StatusCodeError)
	sp.Attributes().PutStr("http.route", "/ok")
	ev := sp.Events().AppendEmpty()
	ev.SetName("exception")
	ev.SetTimestamp(pcommon.NewTimestampFromTime(now))
	if edit != nil {
		edit(spanParts{rs, ss, sp})
	}
	return td
}

// runRecords starts a broker and a node reading encoding, produces traces
// of the generator's traffic (with its error traces; none if traces is 0)
// and then records, waits until the node has read, decided and committed
// all of them, stops it, and returns it, its archive directory and the
// generator's truth. The node must stay up throughout: a panic or a stack
// overflow would end the test binary.
func runRecords(t *testing.T, encoding string, traces int, records [][]byte) (*node, string, *gen.Truth) {
	t.Helper()
	const topic, group = "otlp_spans", "hostile"
	partitions := int32(4)
	if traces == 0 {
		partitions = 1 // waitCommitted waits for a commit on every partition
	}
	b, err := broker.Start(broker.Config{Addr: "127.0.0.1:0", Topic: topic, Partitions: partitions, MaxMessageBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	client, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.DefaultProduceTopic(topic), kgo.ProducerBatchMaxBytes(64<<20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	ctx := context.Background()
	truth := &gen.Truth{}
	if traces > 0 {
		if truth, err = gen.Produce(ctx, client, topic, gen.Config{Seed: 7, Traces: traces, Encoding: encoding, Start: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range records {
		if err := client.ProduceSync(ctx, &kgo.Record{Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	n, stop := startTestNode(t, b.Addr(), topic, dir, func(c *Config) {
		c.Kafka.Group = group
		c.Kafka.Encoding = encoding
		c.Archive.RollAge = time.Second // files close, and offsets commit, soon after the flush
	})
	waitRecords(t, n, int64(truth.Messages+len(records)))
	if err := n.sampler.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Every record settled and committed, the hostile ones too: a restart
	// would not read them again.
	waitCommitted(t, kadm.NewClient(client), group, topic, 2*time.Minute)
	stop()
	return n, dir, truth
}

// checkArchive checks that every generated error trace is archived whole,
// and that every file reads in DuckDB (a glob query over the whole archive
// that decodes every column of every row) and in hyparquet, which agree on
// the rows. It returns the archived rows of the hostile traces, by trace ID,
// as hyparquet read them.
func checkArchive(t *testing.T, dir string, truth *gen.Truth) map[string]parquetcheck.Row {
	t.Helper()
	archived := archivedSpansByTrace(t, dir)
	for id, spans := range truth.ErrorTraces {
		if archived[id] != spans {
			t.Errorf("error trace %x: %d of %d spans archived", id, archived[id], spans)
		}
	}
	if len(truth.ErrorTraces) == 0 {
		t.Fatal("the generator made no error traces")
	}

	db := openDuckDB(t)
	var rows, chars int64
	err := db.QueryRow(fmt.Sprintf(`SELECT count(*), sum(length(t::VARCHAR))
		FROM read_parquet('%s/**/*.parquet', hive_partitioning = true) AS t`, dir)).Scan(&rows, &chars)
	if err != nil {
		t.Fatalf("DuckDB over the whole archive: %v", err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*", "*", "*.parquet"))
	if err != nil || len(files) == 0 {
		t.Fatalf("archive files: %v %v", files, err)
	}
	read := parquetcheck.Read(t, files...)
	if int64(len(read)) != rows {
		t.Errorf("hyparquet read %d rows, DuckDB %d", len(read), rows)
	}
	out := map[string]parquetcheck.Row{}
	for _, r := range read {
		if id, _ := r["trace_id"].(string); strings.HasPrefix(id, "eeeeeeee") {
			out[id] = r
		}
	}
	return out
}

// TestHostileInput: a node reading the generator's traffic mixed with
// poison records stays up, archives every error trace whole, and writes
// only files that DuckDB and hyparquet read. Attribute values nested a
// million levels deep in protobuf (9 and 15 MB records) are archived with
// the value truncated at otlpwire.MaxValueDepth levels; spans with invalid
// UTF-8 in each kind of string the archive stores are archived with each
// invalid byte replaced by U+FFFD, and counted.
func TestHostileInput(t *testing.T) {
	type utf8Case struct {
		field string
		edit  func(spanParts)
		col   func(r parquetcheck.Row) any // where the repaired string is archived
		want  string
	}
	mapValue := func(col, key string) func(parquetcheck.Row) any {
		return func(r parquetcheck.Row) any { m, _ := r[col].(map[string]any); return m[key] }
	}
	eventName := func(r parquetcheck.Row) any {
		if ev, _ := r["events"].([]any); len(ev) > 0 {
			e, _ := ev[0].(map[string]any)
			return e["name"]
		}
		return nil
	}
	str := func(col string) func(parquetcheck.Row) any {
		return func(r parquetcheck.Row) any { return r[col] }
	}
	cases := []utf8Case{
		{"span name", func(p spanParts) { p.sp.SetName("GET /\xff") }, str("name"), "GET /\ufffd"},
		{"attribute key", func(p spanParts) { p.sp.Attributes().PutStr("k\xfe", "v") }, mapValue("attributes", "k\ufffd"), "v"},
		{"attribute value", func(p spanParts) { p.sp.Attributes().PutStr("k", "v\xc3") }, mapValue("attributes", "k"), "v\ufffd"},
		{"status message", func(p spanParts) { p.sp.Status().SetMessage("boom\xff") }, str("status_message"), "boom\ufffd"},
		{"http.route", func(p spanParts) { p.sp.Attributes().PutStr("http.route", "/\xed\xa0\x80") }, str("http_route"), "/\ufffd\ufffd\ufffd"},
		{"event name", func(p spanParts) { p.sp.Events().At(0).SetName("exc\xff") }, eventName, "exc\ufffd"},
		{"resource attribute", func(p spanParts) { p.rs.Resource().Attributes().PutStr("host.name", "h\xff") },
			mapValue("resource_attributes", "host.name"), "h\ufffd"},
		{"scope name", func(p spanParts) { p.ss.Scope().SetName("fuzz\xff") }, str("scope_name"), "fuzz\ufffd"},
		{"scope version", func(p spanParts) { p.ss.Scope().SetVersion("1.\xff") }, str("scope_version"), "1.\ufffd"},
	}
	var records [][]byte
	for i, c := range cases {
		raw, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(hostileSpan(hostileID(i), c.edit))
		if err != nil {
			t.Fatal(err)
		}
		records = append(records, raw)
	}
	deep := []int{len(cases), len(cases) + 1} // array, kvlist
	for j, id := range deep {
		raw, err := wiretest.WithAttr(hostileSpan(hostileID(id), nil), "deep", wiretest.NestedValue(1_000_000, j == 1))
		if err != nil {
			t.Fatal(err)
		}
		records = append(records, raw)
	}

	n, dir, truth := runRecords(t, gen.EncodingProto, 1500, records)
	rows := checkArchive(t, dir, truth)
	for i, c := range cases {
		id := hostileID(i)
		r, ok := rows[hex.EncodeToString(id[:])]
		if !ok {
			t.Errorf("%s: trace not archived", c.field)
			continue
		}
		if got := c.col(r); got != c.want {
			t.Errorf("%s: archived %q, want %q", c.field, got, c.want)
		}
	}
	// The span name is archived twice: as name and as trace_root_name.
	if got, want := sumCounter(n.reg, "tailsift_archive_invalid_utf8_total", "", ""), float64(len(cases)+1); got != want {
		t.Errorf("tailsift_archive_invalid_utf8_total = %v, want %v", got, want)
	}
	for _, id := range deep {
		tid := hostileID(id)
		r, ok := rows[hex.EncodeToString(tid[:])]
		if !ok {
			t.Errorf("deep trace %x not archived", tid)
			continue
		}
		attrs, _ := r["attributes"].(map[string]any)
		v, _ := attrs["deep"].(string)
		if strings.Count(v, otlpwire.TruncatedValue) != 1 || strings.Contains(v, "bottom") {
			t.Errorf("deep trace %x: attribute archived as %.200s…", tid, v)
		}
	}
}

// jsonSpan is an OTLP/JSON record of one root error span of trace id with
// the attribute deep = value (OTLP/JSON AnyValue).
func jsonSpan(id [16]byte, value string) []byte {
	now := time.Now().UnixNano()
	return []byte(fmt.Sprintf(`{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"hostile"}}]},`+
		`"scopeSpans":[{"spans":[{"traceId":"%x","spanId":"ee01000000000000","name":"deep","startTimeUnixNano":"%d",`+
		`"endTimeUnixNano":"%d","status":{"code":2},"attributes":[{"key":"deep","value":%s}]}]}]}]}`, id, now, now+1e6, value))
}

// TestHostileInputJSON: a node reading otlp_json stays up through records
// nested a million levels deep (28 and 48 MB), which it skips and counts as
// malformed JSON, while it archives every error trace whole; a value nested
// deeper than otlpwire.MaxValueDepth but within the record limit is
// archived truncated.
func TestHostileInputJSON(t *testing.T) {
	shallow := hostileID(0)
	records := [][]byte{
		jsonSpan(shallow, wiretest.NestedJSONValue(otlpwire.MaxValueDepth+16, false)),
		jsonSpan(hostileID(1), wiretest.NestedJSONValue(1_000_000, false)),
		jsonSpan(hostileID(2), wiretest.NestedJSONValue(1_000_000, true)),
	}
	n, dir, truth := runRecords(t, gen.EncodingJSON, 1500, records)
	if got := sumCounter(n.reg, "tailsift_router_malformed_messages_total", "kind", "json"); got != 2 {
		t.Errorf("malformed JSON records counted: %v, want 2", got)
	}
	rows := checkArchive(t, dir, truth)
	if len(rows) != 1 {
		t.Errorf("hostile traces archived: %d, want only %x", len(rows), shallow)
	}
	r := rows[hex.EncodeToString(shallow[:])]
	attrs, _ := r["attributes"].(map[string]any)
	if v, _ := attrs["deep"].(string); strings.Count(v, otlpwire.TruncatedValue) != 1 {
		t.Errorf("trace %x: deep attribute archived as %.200s…", shallow, v)
	}
}
