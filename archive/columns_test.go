package archive

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/tailsift/tailsift/sampler"
	"google.golang.org/protobuf/encoding/protowire"
)

// Encoders for hand-made OTLP messages: pdata cannot make what these tests
// need (repeated keys, odd IDs, a clock that went backwards).

func pbBytes(dst []byte, num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(dst, num, protowire.BytesType), v)
}

func pbVarint(dst []byte, num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(dst, num, protowire.VarintType), v)
}

func pbFixed64(dst []byte, num protowire.Number, v uint64) []byte {
	return protowire.AppendFixed64(protowire.AppendTag(dst, num, protowire.Fixed64Type), v)
}

// pbKV encodes a KeyValue; value is an encoded AnyValue.
func pbKV(key string, value []byte) []byte {
	return pbBytes(pbBytes(nil, 1, []byte(key)), 2, value)
}

func anyStr(s string) []byte   { return pbBytes(nil, 1, []byte(s)) }
func anyInt(i int64) []byte    { return pbVarint(nil, 3, uint64(i)) }
func anyBool(b bool) []byte    { return pbVarint(nil, 2, map[bool]uint64{true: 1}[b]) }
func anyBytes(b []byte) []byte { return pbBytes(nil, 7, b) }
func anyDouble(f float64) []byte {
	return pbFixed64(nil, 4, math.Float64bits(f))
}
func anyArray(vals ...[]byte) []byte {
	var a []byte
	for _, v := range vals {
		a = pbBytes(a, 1, v)
	}
	return pbBytes(nil, 5, a)
}

// attrs encodes KeyValues as the repeated field num.
func attrs(dst []byte, num protowire.Number, kvs ...[]byte) []byte {
	for _, kv := range kvs {
		dst = pbBytes(dst, num, kv)
	}
	return dst
}

// wireKept returns 40 traces of 7 spans each, over three scopes, whose
// spans use every rule of decoding: repeated keys, promoted keys under old
// and new names, promotion from the resource, non-string values, events
// and links with and without attributes, status messages, trace state, a
// span carrying another trace's ID, a clock that went backwards.
func wireKept(decided time.Time) []*sampler.Kept {
	scope := pbVarint(pbBytes(pbBytes(nil, 1, []byte("lib")), 2, []byte("1.0")), 4, 3)
	scopes := []*sampler.Scope{
		{Service: "svc-a", Scope: scope, Resource: attrs(nil, 1,
			pbKV("service.name", anyStr("svc-a")),
			pbKV("deployment.environment", anyStr("old-env")),
			pbKV("deployment.environment.name", anyStr("new-env")),
			pbKV("k8s.namespace.name", anyStr("ns1")),
			pbKV("zeta", anyInt(7)),
			pbKV("alpha", anyArray(anyStr("x"), anyInt(2))),
			pbKV("dup", anyStr("first")),
			pbKV("dup", anyStr("second")),
			pbKV("host.name", anyStr("host-123")),
		)},
		{Scope: pbBytes(nil, 2, []byte("v2"))}, // no resource, no scope name
		{Service: "svc-c", Resource: attrs(nil, 1, pbKV("service.name", anyStr("svc-c")), pbKV("http.status_code", anyInt(201)))},
	}
	base := decided.Add(-time.Minute).UnixNano()
	var out []*sampler.Kept
	for t := range 40 {
		var id sampler.TraceID
		for i := range id {
			id[i] = byte(t*37 + i*11)
		}
		k := &sampler.Kept{ID: id, SampleRate: float64(t%5) + 0.5, Reason: fmt.Sprintf("r%d", t%3), DecidedAt: decided,
			RootService: "svc-a", RootName: "root", Start: base, DurationNs: int64(t) * 1000, SpanCount: 7,
			HasError: t%2 == 0, Late: t%4 == 1}
		for s := range 7 {
			tid := id[:]
			if s == 6 && t%3 == 0 {
				tid = []byte{1, 2, 3}
			}
			sp := pbBytes(nil, 1, tid)
			sp = pbBytes(sp, 2, []byte{byte(s), byte(t), 9, 8, 7, 6, 5, byte(s * t)})
			if s%3 == 1 {
				sp = pbBytes(sp, 3, []byte("ts=1"))
			}
			if s > 0 {
				sp = pbBytes(sp, 4, []byte{0, byte(t), 9, 8, 7, 6, 5, 0})
			}
			sp = pbBytes(sp, 5, fmt.Appendf(nil, "op-%d", s%4))
			sp = pbVarint(sp, 6, uint64((s+t)%8)) // 6 and 7 are not kinds
			start := uint64(base + int64(s%3)*1000 + int64(t))
			end := start + uint64(s*100)
			if s == 5 {
				end = start - 10
			}
			sp = pbFixed64(pbFixed64(sp, 7, start), 8, end)
			switch s {
			case 0:
				sp = attrs(sp, 9,
					pbKV("http.method", anyStr("GET")),
					pbKV("http.request.method", anyStr("POST")),
					pbKV("http.status_code", anyStr("oops")),
					pbKV("user.email", anyStr("a@b.c")),
					pbKV("b", anyStr("1")), pbKV("a", anyStr("1")), pbKV("b", anyStr("2")))
			case 1:
				sp = attrs(sp, 9,
					pbKV("http.response.status_code", anyInt(404)),
					pbKV("url.path", anyStr(fmt.Sprintf("/x/%d", t))),
					pbKV("f", anyDouble(1.25)), pbKV("bo", anyBool(true)), pbKV("by", anyBytes([]byte{0xde, 0xad})),
					pbKV("enduser.id", anyStr("u-1")))
			case 2:
				sp = attrs(sp, 9,
					pbKV("db.system", anyStr("pg")), pbKV("db.system.name", anyStr("postgresql")),
					pbKV("rpc.service", anyStr("S")), pbKV("rpc.method", anyStr("M")),
					pbKV("k8s.namespace.name", anyStr("span-ns")), pbKV("http.status_code", anyDouble(503.7)))
			case 3:
				sp = attrs(sp, 9,
					pbKV("deployment.environment", anyStr("span-env")), pbKV("empty", nil), pbKV("", anyStr("no key")),
					pbKV(strings.Repeat("long", 40), anyStr(strings.Repeat("v", 300))))
			}
			if s%2 == 0 {
				ev := pbFixed64(nil, 1, start+5)
				ev = pbBytes(ev, 2, []byte("exception"))
				ev = attrs(ev, 3, pbKV("exception.type", anyStr("E")), pbKV("a", anyInt(1)), pbKV("user.email", anyStr("x@y")))
				sp = pbBytes(sp, 11, ev)
				sp = pbBytes(sp, 11, pbBytes(nil, 2, []byte("bare")))
			}
			if s%3 == 2 {
				ln := pbBytes(pbBytes(pbBytes(nil, 1, id[:]), 2, []byte{1, 2, 3, 4, 5, 6, 7, byte(t)}), 3, []byte("lts"))
				ln = attrs(ln, 4, pbKV("retry", anyBool(true)), pbKV("user.email", anyStr("m")))
				sp = pbBytes(sp, 13, ln)
				sp = pbBytes(sp, 13, pbBytes(nil, 2, []byte{9}))
			}
			if s%2 == 1 {
				sp = pbBytes(sp, 15, pbVarint(pbBytes(nil, 2, fmt.Appendf(nil, "msg %d", s)), 3, uint64(s%4)))
			}
			sp = protowire.AppendFixed32(protowire.AppendTag(sp, 16, protowire.Fixed32Type), 1)
			k.Spans = append(k.Spans, sampler.Span{Raw: sp, Scope: scopes[(s+t)%3], Start: int64(start), End: int64(end)})
		}
		out = append(out, k)
	}
	return out
}

// writeKept writes kept with a Writer of cfg and returns the files.
func writeKept(t *testing.T, cfg Config, kept []*sampler.Kept) []string {
	t.Helper()
	dir := t.TempDir()
	cfg.URL = "file://" + dir
	w, err := New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range kept {
		if err := w.add(k); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.closeAll(); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "dt=*", "hour=*", "*.parquet"))
	if err != nil || len(files) == 0 {
		t.Fatalf("files %v, %v", files, err)
	}
	return files
}

// checkSameAsRowWriter reads every row group of a file into Rows and writes
// them again with parquet-go's own writer for Row, with the archive's
// options: the file must come out byte for byte the same, so the column
// writer is exactly what writing Rows would be (schema, values, levels,
// map order, pages, dictionaries, statistics, page index, bloom filter).
func checkSameAsRowWriter(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pf, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	w := parquet.NewGenericWriter[Row](&again, writerOptions()...)
	for _, rg := range pf.RowGroups() {
		rows := make([]Row, rg.NumRows())
		r := parquet.NewGenericRowGroupReader[Row](rg)
		if n, err := r.Read(rows); n != len(rows) {
			t.Fatalf("%s: read %d of %d rows: %v", path, n, len(rows), err)
		}
		r.Close()
		if _, err := w.Write(rows); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Bytes(), data) {
		t.Errorf("%s (%d bytes, %d row groups) differs from its rows written by parquet.GenericWriter[Row] (%d bytes)",
			path, len(data), len(pf.RowGroups()), again.Len())
	}
}

func TestColumnsMatchRowWriter(t *testing.T) {
	decided := time.Now()
	kept, _ := genKept(t, 400)
	kept = append(kept, wireKept(decided)...)
	redact := []RedactRule{
		{Keys: []string{"user.email", "deployment.environment"}, Action: "drop"},
		{KeyPattern: `^enduser\.`, Action: "hash"},
		{Keys: []string{"url.path", "host.name"}, Action: "mask", Pattern: `[0-9]+`},
	}
	// Row groups of 64 KiB: several per file, several pages in some.
	for _, f := range writeKept(t, Config{NodeID: "n", RowGroupBytes: 64 << 10, Redact: redact, RedactKey: []byte("0123456789abcdef")}, kept) {
		checkSameAsRowWriter(t, f)
	}
}

// TestDecodeRules checks how spans become rows where OTLP leaves room:
// repeated keys, promoted keys under two names, promotion from the
// resource, the text of non-string values.
func TestDecodeRules(t *testing.T) {
	decided := time.Now()
	rows := map[string]Row{}
	for _, f := range writeKept(t, Config{NodeID: "n"}, wireKept(decided)) {
		rs, err := parquet.ReadFile[Row](f)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			rows[r.SpanID] = r
		}
	}
	if len(rows) != 280 {
		t.Fatalf("%d rows, want 280", len(rows))
	}
	str := func(p *string) string {
		if p == nil {
			return "<nil>"
		}
		return *p
	}
	// Trace 1: span s has scope (s+1)%3.
	id1 := fmt.Sprintf("%x", wireKept(decided)[1].ID)
	r0 := rows["0001090807060500"] // span 0: no resource
	if str(r0.HTTPRequestMethod) != "POST" || r0.Attributes["b"] != "2" || r0.Attributes["a"] != "1" ||
		r0.Attributes["http.status_code"] != "oops" || r0.HTTPResponseStatusCode != nil || len(r0.Attributes) != 4 ||
		r0.ServiceName != "" || len(r0.ResourceAttributes) != 0 || r0.ScopeName != "" || r0.ScopeVersion != "v2" ||
		r0.Kind != "INTERNAL" || r0.TraceID != id1 || r0.ParentSpanID != "" || !r0.Late || r0.SampleRate != 1.5 {
		t.Errorf("span 0 = %+v", r0)
	}
	r1 := rows["0101090807060501"] // span 1: scope svc-c
	if r1.HTTPResponseStatusCode == nil || *r1.HTTPResponseStatusCode != 404 || str(r1.URLPath) != "/x/1" ||
		r1.Attributes["f"] != "1.25" || r1.Attributes["bo"] != "true" || r1.Attributes["by"] != "3q0=" ||
		r1.ServiceName != "svc-c" || r1.ResourceAttributes["http.status_code"] != "201" || r1.ScopeName != "" ||
		r1.TraceState != "ts=1" || r1.StatusMessage != "msg 1" || r1.StatusCode != "OK" || r1.Kind != "SERVER" ||
		r1.TraceID != id1 || r1.ParentSpanID != "0001090807060500" {
		t.Errorf("span 1 = %+v", r1)
	}
	r2 := rows["0201090807060502"] // span 2: scope svc-a
	if str(r2.DBSystem) != "postgresql" || str(r2.RPCService) != "S" || str(r2.RPCMethod) != "M" ||
		str(r2.K8sNamespaceName) != "span-ns" || str(r2.DeploymentEnvironment) != "old-env" ||
		r2.HTTPResponseStatusCode == nil || *r2.HTTPResponseStatusCode != 503 ||
		r2.ResourceAttributes["dup"] != "second" || r2.ResourceAttributes["alpha"] != `["x",2]` ||
		r2.ResourceAttributes["zeta"] != "7" || r2.ScopeName != "lib" || r2.ScopeVersion != "1.0" ||
		len(r2.Events) != 2 || r2.Events[0].Attributes["a"] != "1" || r2.Events[1].Name != "bare" || len(r2.Events[1].Attributes) != 0 ||
		len(r2.Links) != 2 || r2.Links[0].SpanID != "0102030405060701" || r2.Links[0].TraceState != "lts" ||
		r2.Links[0].Attributes["retry"] != "true" || r2.Links[1].SpanID != "09" || r2.Links[1].TraceID != "" {
		t.Errorf("span 2 = %+v", r2)
	}
	r3 := rows["0301090807060503"] // span 3: no resource
	if str(r3.DeploymentEnvironment) != "span-env" || r3.Attributes["empty"] != "" || r3.Attributes[""] != "no key" ||
		len(r3.Attributes[strings.Repeat("long", 40)]) != 300 || r3.Kind != "PRODUCER" || r3.StatusCode != "3" ||
		r3.StatusMessage != "msg 3" {
		t.Errorf("span 3 = %+v", r3)
	}
	if r5 := rows["0501090807060505"]; r5.DurationNs != 0 || r5.EndTimeUnixNano >= r5.StartTimeUnixNano || r5.Kind != "6" {
		t.Errorf("span 5 (end before start) = %+v", r5)
	}
	if r6 := rows["0600090807060500"]; r6.TraceID != "010203" || r6.TraceRootName != "root" || r6.KeepReason != "r0" {
		t.Errorf("span 6 of trace 0 (another trace's ID) = %+v", r6)
	}
}
