package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// TestREADMERedaction runs a node with the README's redaction example and
// checks, in the Parquet files with DuckDB, that the span the README
// describes is archived as it says.
func TestREADMERedaction(t *testing.T) {
	dir := t.TempDir()
	key := []byte("0123456789abcdef-readme-test-key")
	keyFile := filepath.Join(t.TempDir(), "redact.key")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	example := readmeYAML(t, "### Redacting attributes")
	if !strings.Contains(example, "/etc/tailsift/redact.key") {
		t.Fatalf("the README example names no key file:\n%s", example)
	}
	example = strings.ReplaceAll(example, "/etc/tailsift/redact.key", keyFile)

	b, client := startBroker(t, 1)
	_, stop := startTestNode(t, b.Addr(), "otlp_spans", dir, func(c *Config) {
		if err := decodeConfig([]byte(example), c); err != nil {
			t.Fatalf("the README example: %v", err)
		}
		c.Archive.URL = "file://" + dir // the example names no archive
		c.Archive.RollAge = time.Second
	})

	// One error trace of one span, so the default policy keeps it.
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "checkout")
	rs.Resource().Attributes().PutStr("enduser.id", "u-1234")
	sp := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	tid := pcommon.TraceID{0x4b, 0xf9, 15: 0x36}
	sp.SetTraceID(tid)
	sp.SetSpanID(pcommon.SpanID{1, 2, 3})
	sp.SetName("POST /pay")
	now := time.Now()
	sp.SetStartTimestamp(pcommon.NewTimestampFromTime(now))
	sp.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Millisecond)))
	sp.Status().SetCode(ptrace.StatusCodeError)
	attrs := sp.Attributes()
	attrs.PutStr("http.request.header.authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.secret")
	attrs.PutStr("enduser.id", "u-1234")
	attrs.PutStr("user.email", "ana@example.com")
	attrs.PutStr("user.phone", "+1 555 0100")
	attrs.PutStr("http.request.method", "POST")
	msg, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.ProduceSync(context.Background(), &kgo.Record{Topic: "otlp_spans", Value: msg}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, func() bool {
		files, _ := filepath.Glob(filepath.Join(dir, "*", "*", "*.parquet"))
		return len(files) > 0
	})
	stop()

	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("u-1234"))
	hashed := "hmac:" + hex.EncodeToString(mac.Sum(nil)[:16])
	var auth, user, resUser, email, phone, method *string
	err = openDuckDB(t).QueryRow(fmt.Sprintf(`SELECT attributes['http.request.header.authorization'],
			attributes['enduser.id'], resource_attributes['enduser.id'], attributes['user.email'],
			attributes['user.phone'], attributes['http.request.method']
		FROM read_parquet('%s/**/*.parquet', hive_partitioning = true) WHERE trace_id = '%s'`, dir, hex.EncodeToString(tid[:]))).
		Scan(&auth, &user, &resUser, &email, &phone, &method)
	if err != nil {
		t.Fatal(err)
	}
	str := func(p *string) string {
		if p == nil {
			return "<absent>"
		}
		return *p
	}
	for _, c := range []struct{ what, got, want string }{
		{"authorization", str(auth), "<absent>"},
		{"enduser.id", str(user), hashed},
		{"resource enduser.id", str(resUser), hashed},
		{"user.email", str(email), "****@example.com"},
		{"user.phone", str(phone), "****"},
	} {
		if c.got != c.want {
			t.Errorf("%s archived as %q, the README says %q", c.what, c.got, c.want)
		}
	}
	// An attribute no rule names is archived as it came (it may be a
	// promoted column rather than in the map).
	if m := str(method); m != "POST" && m != "<absent>" {
		t.Errorf("http.request.method archived as %q", m)
	}
}
