package router

import (
	"strings"
	"testing"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// TestScanErrorsQuoteNoPayload scans records that fail in each encoding,
// the other encoding's records among them, and checks that no error text
// (which goes to logs and dead-letter headers) quotes a byte of them.
func TestScanErrorsQuoteNoPayload(t *testing.T) {
	const secret = "hunter2hunter2"
	td := ptrace.NewTraces()
	s := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	s.SetTraceID(pcommon.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	s.SetSpanID(pcommon.SpanID{1, 2, 3, 4, 5, 6, 7, 8})
	s.SetName("charge-card")
	s.Attributes().PutStr("password", secret)
	js, _ := (&ptrace.JSONMarshaler{}).MarshalTraces(td)
	pb, _ := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	for _, tc := range []struct {
		encoding string
		value    []byte
	}{
		{EncodingProto, js},
		{EncodingProto, pb[:len(pb)-5]},
		{EncodingJSON, pb},
		{EncodingJSON, js[:len(js)-20]},
		{EncodingJSON, []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz` + secret + `"}]}]}]}`)},
		{EncodingJSON, []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"` + secret + `",}]}]}]}`)},
	} {
		sc, _ := NewScanner(tc.encoding)
		_, err := sc.Scan(tc.value, nil)
		if err == nil {
			t.Fatalf("%s: %q scanned", tc.encoding, tc.value)
		}
		for _, frag := range []string{secret, "hunter", "charge", "password", "zz"} {
			if strings.Contains(err.Error(), frag) {
				t.Errorf("%s: error %q quotes the record (%q)", tc.encoding, err, frag)
			}
		}
	}
}
