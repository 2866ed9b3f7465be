package main

import (
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tailsift/tailsift/bench/gen"
	"github.com/tailsift/tailsift/internal/otlpwire/wiretest"
	"github.com/tailsift/tailsift/internal/parquetcheck"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"google.golang.org/protobuf/encoding/protowire"
)

// Span IDs of the contract traces.
var (
	contractRoot    = pcommon.SpanID{0xc0, 1} // kind 99, status 7, an attribute of every type
	contractChild   = pcommon.SpanID{0xc0, 2} // an ordinary client span with an error
	contractZeroPar = pcommon.SpanID{0xc0, 3} // a root whose parent_span_id is 8 zero bytes
)

// putEveryType sets an attribute of every OTLP value type in m, with
// strings that need escaping in JSON.
func putEveryType(m pcommon.Map) {
	m.PutStr("str", "say \"hi\"\\\n\t\x01")
	m.PutBool("bool", true)
	m.PutInt("int", -42)
	m.PutInt("int.max", math.MaxInt64)
	m.PutDouble("double", 0.25)
	m.PutDouble("double.big", 1e21)
	m.PutEmptyBytes("bytes").FromRaw([]byte{1, 2, 3})
	m.PutEmpty("empty")
	arr := m.PutEmptySlice("arr")
	arr.AppendEmpty().SetStr("a\"b\x7f")
	arr.AppendEmpty().SetInt(1)
	arr.AppendEmpty().SetBool(false)
	arr.AppendEmpty().SetDouble(1.5)
	arr.AppendEmpty().SetEmptyBytes().FromRaw([]byte{0xff})
	arr.AppendEmpty()
	arr.AppendEmpty().SetEmptySlice().AppendEmpty().SetStr("nested")
	arr.AppendEmpty().SetEmptyMap().PutStr("k", "v")
	kv := m.PutEmptyMap("map")
	kv.PutStr("k", "v")
	kv.PutEmptyMap("n").PutDouble("x", 1.5)
	kv.PutEmptySlice("none")
	kv.PutStr("ctl\x02", "\u2028")
}

// contractTraces returns two traces exercising the archive contract: every
// attribute value type on the span, its resource, an event and a link; an
// unknown kind and status code; a non-string service.name; and (in the
// second, with rootZeroParent) a root span whose parent ID is all zeros.
func contractTraces(start time.Time) (td, zeroParent ptrace.Traces) {
	ts := func(d time.Duration) pcommon.Timestamp { return pcommon.NewTimestampFromTime(start.Add(d)) }
	td = ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutInt("service.name", 42)
	putEveryType(rs.Resource().Attributes())
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName("contract")
	ss.Scope().SetVersion("1.2.3")
	root := ss.Spans().AppendEmpty()
	root.SetTraceID(pcommon.TraceID{0xc0, 1})
	root.SetSpanID(contractRoot)
	root.SetName("root")
	root.SetKind(99)
	root.Status().SetCode(7)
	root.SetStartTimestamp(ts(0))
	root.SetEndTimestamp(ts(time.Second))
	root.TraceState().FromRaw("ot=th:0")
	putEveryType(root.Attributes())
	ev := root.Events().AppendEmpty()
	ev.SetName("ev")
	ev.SetTimestamp(ts(time.Millisecond))
	putEveryType(ev.Attributes())
	ln := root.Links().AppendEmpty()
	ln.SetTraceID(pcommon.TraceID{0xc0, 9})
	ln.SetSpanID(pcommon.SpanID{0xc0, 9})
	ln.TraceState().FromRaw("k=v")
	putEveryType(ln.Attributes())
	child := ss.Spans().AppendEmpty()
	child.SetTraceID(pcommon.TraceID{0xc0, 1})
	child.SetSpanID(contractChild)
	child.SetParentSpanID(contractRoot)
	child.SetName("GET")
	child.SetKind(ptrace.SpanKindClient)
	child.Status().SetCode(ptrace.StatusCodeError)
	child.Status().SetMessage("unavailable")
	child.SetStartTimestamp(ts(10 * time.Millisecond))
	child.SetEndTimestamp(ts(900 * time.Millisecond))
	child.Attributes().PutStr("http.route", "/x/{id}")
	child.Attributes().PutInt("http.response.status_code", 503)

	zeroParent = ptrace.NewTraces()
	rs = zeroParent.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "zero")
	sp := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	sp.SetTraceID(pcommon.TraceID{0xc0, 2})
	sp.SetSpanID(contractZeroPar)
	sp.SetName("zero-parent root")
	sp.SetKind(ptrace.SpanKindServer)
	sp.Status().SetCode(ptrace.StatusCodeError)
	sp.SetStartTimestamp(ts(0))
	sp.SetEndTimestamp(ts(time.Millisecond))
	return td, zeroParent
}

// contractRecords encodes the contract traces as the Collector's
// kafkaexporter does for encoding, with the all-zero parent ID added to the
// encoding by hand (pdata leaves an all-zero ID out).
func contractRecords(t *testing.T, encoding string, start time.Time) [][]byte {
	t.Helper()
	td, zero := contractTraces(start)
	if encoding == gen.EncodingJSON {
		a, err := (&ptrace.JSONMarshaler{}).MarshalTraces(td)
		if err != nil {
			t.Fatal(err)
		}
		b, err := (&ptrace.JSONMarshaler{}).MarshalTraces(zero)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf(`"spanId":"%x"`, contractZeroPar[:])
		if !strings.Contains(string(b), id) {
			t.Fatalf("no %s in %s", id, b)
		}
		b = []byte(strings.Replace(string(b), id, id+`,"parentSpanId":"0000000000000000"`, 1))
		return [][]byte{a, b}
	}
	a, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		t.Fatal(err)
	}
	b, err := wiretest.WithFields(zero, protowire.AppendBytes(protowire.AppendTag(nil, 4, protowire.BytesType), make([]byte, 8)))
	if err != nil {
		t.Fatal(err)
	}
	return [][]byte{a, b}
}

// canonical puts a value read by either reader in one form: numbers and
// strings as strings (hyparquet gives 64-bit integers as strings, DuckDB's
// JSON as numbers; doubles as Go formats them), and empty lists and maps as
// nil (a NULL at the top level).
func canonical(v any) any {
	switch v := v.(type) {
	case json.Number:
		s := v.String()
		if strings.ContainsAny(s, ".eE") {
			if f, err := strconv.ParseFloat(s, 64); err == nil {
				return strconv.FormatFloat(f, 'g', -1, 64)
			}
		}
		return s
	case []any:
		if len(v) == 0 {
			return nil
		}
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = canonical(e)
		}
		return out
	case map[string]any:
		if len(v) == 0 {
			return nil
		}
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = canonical(e)
		}
		return out
	}
	return v
}

// duckRows reads every row of the archive in dir with DuckDB, as JSON
// objects (timestamps as microseconds), by span ID.
func duckRows(t *testing.T, dir string) map[string]map[string]any {
	t.Helper()
	db := openDuckDB(t)
	rows, err := db.Query(fmt.Sprintf(`SELECT to_json(t)::VARCHAR FROM (
		SELECT * REPLACE (epoch_us(start_time) AS start_time, epoch_us(decided_at) AS decided_at)
		FROM read_parquet('%s/*/*/*.parquet', hive_partitioning = false)) AS t`, dir))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]map[string]any{}
	for rows.Next() {
		var text string
		if err := rows.Scan(&text); err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(strings.NewReader(text))
		dec.UseNumber()
		var r map[string]any
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("%v: %s", err, text)
		}
		out[r["span_id"].(string)] = canonical(r).(map[string]any)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestArchiveContract: spans carrying every OTLP value type and the edge
// cases readers trip on, produced to Kafka in both encodings the Collector
// writes, are archived so that DuckDB and hyparquet read every column of
// every row the same, and both encodings give the same rows; composite
// attributes are valid JSON, bytes base64, unknown enum values keep their
// number, roots (an all-zero parent ID included) have parent_span_id = ”,
// a non-string service.name is rendered (in trace_root_service too), and
// the partition columns read as a DATE and a BIGINT.
func TestArchiveContract(t *testing.T) {
	byEncoding := map[string]map[string]map[string]any{}
	// Yesterday, 05:30 UTC: an hour below 10, which a zero-padded
	// partition (hour=05) would give DuckDB as text.
	start := time.Now().UTC().Truncate(24 * time.Hour).Add(-24*time.Hour + 5*time.Hour + 30*time.Minute)
	for _, enc := range []string{gen.EncodingProto, gen.EncodingJSON} {
		_, dir, _ := runRecords(t, enc, 0, contractRecords(t, enc, start))
		duck := duckRows(t, dir)
		if len(duck) != 3 {
			t.Fatalf("%s: %d rows archived, want 3", enc, len(duck))
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*", "*", "*.parquet"))
		hyp := parquetcheck.Read(t, files...)
		if len(hyp) != len(duck) {
			t.Fatalf("%s: hyparquet read %d rows, DuckDB %d", enc, len(hyp), len(duck))
		}
		for _, r := range hyp {
			delete(r, "file")
			h := canonical(map[string]any(r)).(map[string]any)
			d := duck[h["span_id"].(string)]
			for col := range d {
				if !reflect.DeepEqual(h[col], d[col]) {
					t.Errorf("%s: span %s, column %s: hyparquet %#v, DuckDB %#v", enc, h["span_id"], col, h[col], d[col])
				}
			}
			if len(h) != len(d) {
				t.Errorf("%s: hyparquet read %d columns, DuckDB %d", enc, len(h), len(d))
			}
		}
		checkContract(t, enc, dir, start)
		byEncoding[enc] = duck
	}
	// Both encodings archive the same rows, but for when they were decided.
	proto, js := byEncoding[gen.EncodingProto], byEncoding[gen.EncodingJSON]
	for id, p := range proto {
		for col, v := range p {
			if col != "decided_at" && !reflect.DeepEqual(v, js[id][col]) {
				t.Errorf("span %s, column %s: otlp_proto %#v, otlp_json %#v", id, col, v, js[id][col])
			}
		}
	}
}

// checkContract checks the archive in dir, of the contract traces started
// at start, with DuckDB's own functions.
func checkContract(t *testing.T, enc, dir string, start time.Time) {
	t.Helper()
	db := openDuckDB(t)
	from := fmt.Sprintf(`read_parquet('%s/**/*.parquet', hive_partitioning = true)`, dir)
	query := func(q string, dst ...any) {
		t.Helper()
		if err := db.QueryRow(strings.ReplaceAll(q, "ARCHIVE", from)).Scan(dst...); err != nil {
			t.Fatalf("%s: %s: %v", enc, q, err)
		}
	}
	// Every array and map, wherever it is, is valid JSON.
	var composite, invalid int
	query(`WITH kv AS (
			SELECT unnest(map_values(attributes)) AS v FROM ARCHIVE
			UNION ALL SELECT unnest(map_values(resource_attributes)) FROM ARCHIVE
			UNION ALL SELECT unnest(map_values(e.attributes)) FROM ARCHIVE, unnest(events) AS u(e)
			UNION ALL SELECT unnest(map_values(l.attributes)) FROM ARCHIVE, unnest(links) AS u(l))
		SELECT count(*) FILTER (WHERE v[1] IN ('[', '{')), count(*) FILTER (WHERE v[1] IN ('[', '{') AND NOT json_valid(v)) FROM kv`,
		&composite, &invalid)
	// arr and map: the root's attributes, event and link, and the resource
	// of the root and of its child.
	if composite != 2*5 || invalid != 0 {
		t.Errorf("%s: %d composite attribute values, %d of them not valid JSON", enc, composite, invalid)
	}
	var str, b, i, imax, d, dbig, bytes, empty, arr, obj, svc, rootSvc, kind, status string
	query(`SELECT attributes['str'], attributes['bool'], attributes['int'], attributes['int.max'], attributes['double'],
			attributes['double.big'], attributes['bytes'], attributes['empty'], attributes['arr'], attributes['map'],
			service_name, trace_root_service, kind, status_code
		FROM ARCHIVE WHERE span_id = 'c001000000000000'`, &str, &b, &i, &imax, &d, &dbig, &bytes, &empty, &arr, &obj, &svc, &rootSvc, &kind, &status)
	want := []string{"say \"hi\"\\\n\t\x01", "true", "-42", "9223372036854775807", "0.25", "1e+21", "AQID", "",
		`["a\"b` + "\x7f" + `",1,false,1.5,"/w==",null,["nested"],{"k":"v"}]`,
		`{"k":"v","n":{"x":1.5},"none":[],"ctl\u0002":"` + "\u2028" + `"}`, "42", "42", "99", "7"}
	for j, got := range []string{str, b, i, imax, d, dbig, bytes, empty, arr, obj, svc, rootSvc, kind, status} {
		if got != want[j] {
			t.Errorf("%s: root span value %d = %q, want %q", enc, j, got, want[j])
		}
	}
	// The partition columns are typed for comparison with plain values:
	// hour a number (an unpadded hour=6), dt a date.
	var hourType, dtType string
	var inHour int
	hour := start.UTC()
	query(fmt.Sprintf(`SELECT any_value(typeof(hour)), any_value(typeof(dt)), count(*) FILTER (WHERE dt = DATE '%s' AND hour = %d)
		FROM ARCHIVE`, hour.Format("2006-01-02"), hour.Hour()), &hourType, &dtType, &inHour)
	if hourType != "BIGINT" || dtType != "DATE" || inHour != 3 {
		t.Errorf("%s: hour is %s, dt %s; %d rows with dt = DATE '%s' AND hour = %d, want BIGINT, DATE, 3",
			enc, hourType, dtType, inHour, hour.Format("2006-01-02"), hour.Hour())
	}
	var roots string
	query(`SELECT string_agg(span_id, ',' ORDER BY span_id) FROM ARCHIVE WHERE parent_span_id = ''`, &roots)
	if roots != "c001000000000000,c003000000000000" {
		t.Errorf("%s: roots found by parent_span_id = '': %s", enc, roots)
	}
}
