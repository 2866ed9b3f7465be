package sampler

import "github.com/tailsift/tailsift/internal/otlpwire"

// ErrorPolicy keeps every trace that has a span with status ERROR, at sample
// rate 1: error traces are never sampled away unless the cost cap forces it.
//
// Many instrumentations leave the span status unset on a failed request and
// record only the protocol's code, so the policy can also treat HTTP 5xx and
// chosen gRPC codes as errors. Those checks read every span's attributes, so
// they are off by default and cost nothing unless configured.
//
// The zero value checks the status only. Reasons start with "error", which
// is how the cost cap (Budget) recognises error traces.
type ErrorPolicy struct {
	// HTTP5xx also keeps a trace with a span whose
	// http.response.status_code (or the older http.status_code) is >= 500.
	HTTP5xx bool
	// GRPCCodes also keeps a trace with a span whose rpc.grpc.status_code is
	// one of these (e.g. 2 UNKNOWN, 4 DEADLINE_EXCEEDED, 13 INTERNAL,
	// 14 UNAVAILABLE). Empty: gRPC codes are not checked.
	GRPCCodes []int64
}

// Reasons of ErrorPolicy verdicts.
const (
	reasonError     = "error"
	reasonErrorHTTP = "error/http_5xx"
	reasonErrorGRPC = "error/grpc"
)

// Name implements Policy.
func (ErrorPolicy) Name() string { return "error" }

// Decide implements Policy.
func (p ErrorPolicy) Decide(t *Trace) Verdict {
	if t.HasError() {
		return Verdict{Decision: Keep, SampleRate: 1, Reason: reasonError}
	}
	if !p.HTTP5xx && len(p.GRPCCodes) == 0 {
		return Verdict{}
	}
	for i := range t.Spans {
		if r := p.spanReason(&t.Spans[i]); r != "" {
			return Verdict{Decision: Keep, SampleRate: 1, Reason: r}
		}
	}
	return Verdict{}
}

// spanReason returns the reason s makes its trace an error trace, or "".
// One pass over the span's attributes covers both checks.
func (p ErrorPolicy) spanReason(s *Span) string {
	reason := ""
	_ = otlpwire.RangeAttrs(s.Raw, fieldSpanAttrs, func(k []byte, v otlpwire.Value) bool {
		switch string(k) {
		case attrHTTPStatus, attrHTTPStatusOld:
			if code, ok := v.Int(); ok && p.HTTP5xx && code >= 500 && code < 600 {
				reason = reasonErrorHTTP
			}
		case attrGRPCStatus:
			if code, ok := v.Int(); ok {
				for _, c := range p.GRPCCodes {
					if c == code {
						reason = reasonErrorGRPC
					}
				}
			}
		}
		return reason == ""
	})
	return reason
}

var _ Policy = ErrorPolicy{}
