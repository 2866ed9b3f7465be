package archive

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestRedaction(t *testing.T) {
	const secret = "alice@example.com"
	dir := t.TempDir()
	cfg := Config{URL: "file://" + dir, RedactKey: []byte("0123456789abcdef"), Redact: []RedactRule{
		{Keys: []string{"user.email"}, Action: "drop"},
		{KeyPattern: `^enduser\.`, Action: "hash"},
		{Keys: []string{"url.path", "host.name"}, Action: "mask", Pattern: `[0-9]+`},
	}}
	start := time.Now().Add(-time.Minute)
	td := testTraces(start)
	for _, rs := range td.ResourceSpans().All() {
		for _, ss := range rs.ScopeSpans().All() {
			for _, sp := range ss.Spans().All() {
				sp.Attributes().PutStr("user.email", secret)
				sp.Attributes().PutStr("enduser.id", "u-42")
				sp.Attributes().PutStr("url.path", "/orders/12345")
				ev := sp.Events().AppendEmpty()
				ev.SetName("login")
				ev.Attributes().PutStr("user.email", secret)
			}
		}
	}
	writeTraces(t, cfg, td, start)
	rows, _ := readRows(t, dir)
	if len(rows) != 3 {
		t.Fatalf("%d rows", len(rows))
	}
	var hashes []string
	for _, r := range rows {
		for _, m := range append([]map[string]string{r.Attributes, r.ResourceAttributes}, eventAttrs(r)...) {
			for k, v := range m {
				if strings.Contains(v, secret) || k == "user.email" {
					t.Fatalf("redacted attribute reached the file: %s=%s", k, v)
				}
			}
		}
		hashes = append(hashes, r.Attributes["enduser.id"])
		if r.URLPath == nil || *r.URLPath != "/orders/****" {
			t.Fatalf("url.path = %v, want masked", r.URLPath)
		}
		if h := r.ResourceAttributes["host.name"]; h != "" && h != "web-****" {
			t.Fatalf("host.name = %q, want masked", h)
		}
	}
	if !strings.HasPrefix(hashes[0], "hmac:") || hashes[0] != hashes[1] || hashes[1] != hashes[2] {
		t.Fatalf("hashed values %v: want one keyed hash, equal for equal values", hashes)
	}
}

func eventAttrs(r Row) []map[string]string {
	var out []map[string]string
	for _, e := range r.Events {
		out = append(out, e.Attributes)
	}
	return out
}

func TestRedactionConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		rules []RedactRule
		key   []byte
		want  string
	}{
		{[]RedactRule{{Keys: []string{"a"}, Action: "shred"}}, nil, "archive.redact[0].action"},
		{[]RedactRule{{Action: "drop"}}, nil, "give keys or key_pattern"},
		{[]RedactRule{{Keys: []string{"a"}, Action: "hash"}}, []byte("short"), "at least 16 bytes"},
		{[]RedactRule{{KeyPattern: "(", Action: "drop"}}, nil, "key_pattern"},
		{[]RedactRule{{Keys: []string{"a"}, Action: "mask", Pattern: "["}}, nil, "archive.redact[0].pattern"},
	} {
		_, err := New(context.Background(), Config{URL: "file://" + t.TempDir(), Redact: tc.rules, RedactKey: tc.key}, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("rules %+v: error %v, want one naming %q", tc.rules, err, tc.want)
		}
	}
}
