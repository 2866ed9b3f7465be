package archive

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tailsift/tailsift/internal/otlpwire"
	"github.com/tailsift/tailsift/internal/otlpwire/wiretest"
	"github.com/tailsift/tailsift/sampler"
)

// stringsOf returns every string that v, a Row, holds: fields, map keys
// and values, and those of its events and links.
func stringsOf(v reflect.Value) []string {
	switch v.Kind() {
	case reflect.String:
		return []string{v.String()}
	case reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		return stringsOf(v.Elem())
	case reflect.Struct:
		var out []string
		for i := range v.NumField() {
			out = append(out, stringsOf(v.Field(i))...)
		}
		return out
	case reflect.Slice:
		var out []string
		for i := range v.Len() {
			out = append(out, stringsOf(v.Index(i))...)
		}
		return out
	case reflect.Map:
		var out []string
		for it := v.MapRange(); it.Next(); {
			out = append(out, it.Key().String(), it.Value().String())
		}
		return out
	}
	return nil
}

// TestWriterRepairsHostileInput: spans with invalid UTF-8 in every kind of
// string the archive stores, and an attribute nested a million levels deep,
// are archived: every string valid UTF-8, each invalid byte replaced by
// U+FFFD and each repaired string counted; the deep value rendered as JSON
// truncated at otlpwire.MaxValueDepth levels.
func TestWriterRepairsHostileInput(t *testing.T) {
	start := time.Date(2026, 3, 4, 5, 0, 0, 0, time.UTC)
	td := testTraces(start)
	rs := td.ResourceSpans().At(0)
	rs.Resource().Attributes().PutStr("host.name", "web-\xff")
	rs.ScopeSpans().At(0).Scope().SetName("otel\xfehttp")
	rs.ScopeSpans().At(0).Scope().SetVersion("0.60\xc3")
	root := rs.ScopeSpans().At(0).Spans().At(0)
	root.SetName("GET /cart\xff")
	root.Attributes().PutStr("http.route", "/cart/\xe2\x82")
	root.Attributes().PutStr("user.\xfftier", "gold")
	root.Attributes().PutStr("note", "a\xffb\xffc")
	child := td.ResourceSpans().At(1).ScopeSpans().At(0).Spans().At(0)
	child.Status().SetMessage("reset \xed\xa0\x80")
	child.Events().At(0).SetName("exc\xffeption")
	const repaired = 9

	raw, err := wiretest.WithAttr(td, "deep", wiretest.NestedValue(1_000_000, true))
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(nil)
	dir := t.TempDir()
	in, done := startWriter(t, Config{URL: "file://" + dir, NodeID: "n1"}, m)
	var src sampler.Pending
	for _, k := range keptRecord(t, raw, &src, start.Add(time.Minute)) {
		in <- k
	}
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	rows, _ := readRows(t, dir)
	if len(rows) != 3 {
		t.Fatalf("%d rows archived, want 3", len(rows))
	}
	for id, r := range rows {
		for _, s := range stringsOf(reflect.ValueOf(r)) {
			if !utf8.ValidString(s) {
				t.Errorf("span %s: invalid UTF-8 archived: %q", id, s)
			}
		}
		deep := r.Attributes["deep"]
		if !json.Valid([]byte(deep)) || strings.Count(deep, otlpwire.TruncatedValue) != 1 ||
			strings.Count(deep, "{") != otlpwire.MaxValueDepth {
			t.Errorf("span %s: deep attribute rendered as %.200s…", id, deep)
		}
	}
	r, c := rows["0101010101010101"], rows["0202020202020202"]
	str := func(p *string) string {
		if p == nil {
			return "<nil>"
		}
		return *p
	}
	if r.Name != "GET /cart\ufffd" || str(r.HTTPRoute) != "/cart/\ufffd\ufffd" || r.Attributes["user.\ufffdtier"] != "gold" ||
		r.Attributes["note"] != "a\ufffdb\ufffdc" || r.ResourceAttributes["host.name"] != "web-\ufffd" ||
		r.ScopeName != "otel\ufffdhttp" || r.ScopeVersion != "0.60\ufffd" {
		t.Errorf("root row = %+v", r)
	}
	if c.StatusMessage != "reset \ufffd\ufffd\ufffd" || c.Events[0].Name != "exc\ufffdeption" {
		t.Errorf("child row = %+v", c)
	}
	if got := testutil.ToFloat64(m.invalidUTF8); got != repaired {
		t.Errorf("tailsift_archive_invalid_utf8_total = %v, want %d", got, repaired)
	}
}
