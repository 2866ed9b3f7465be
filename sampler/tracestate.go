package sampler

import (
	"bytes"
	"math"
)

// HeadSampling honours a sampling decision made upstream, before the trace
// reached tailsift: an OpenTelemetry SDK or collector that sampled the trace
// with probability p_head records the rejection threshold in the W3C
// tracestate as `ot=th:<hex>` (OTel's consistent probability sampling,
// tracestate handling spec). Every such trace stands for 1/p_head traces, so
// the adjusted count of a kept trace must include that factor or
// SUM(sample_rate) undercounts.
//
// How the factors combine depends on where the randomness came from. The
// head sampler kept the trace because its randomness R (the trace ID's last
// 56 bits) was at least T_head; the tail policies of this package that sample
// (probabilistic, rules' sample, dynamic) test the same R against their own
// threshold. The two decisions are therefore nested, not independent: a trace
// reaches the archive when R >= max(T_head, T_tail), with probability
// min(p_head, p_tail), so the adjusted count is max(rate_head, rate_tail),
// not the product. Multiplying would overcount: head 10% then tail 10% keeps
// 10% of traces, not 1%. A deterministic tail keep (rate 1: error, latency,
// rule keep) gives max = product = rate_head, as it must.
//
// When tracestate carries explicit randomness (`ot=rv:<hex>`), the head
// decision used rv, which is independent of the trace ID bits the tail
// policies use, and the rates multiply.
//
// The tracestate is read from the root span (or, without a root, the first
// span that has one): it is the root's context that the head sampler decided
// on. A missing, malformed or zero threshold means p_head = 1.
//
// Budget, if used, goes outside HeadSampling: its draw is independent of the
// trace ID randomness, so its factor multiplies whatever this one yields.
type HeadSampling struct {
	Inner Policy
}

// Name implements Policy.
func (h HeadSampling) Name() string { return h.Inner.Name() }

// Decide implements Policy.
func (h HeadSampling) Decide(t *Trace) Verdict {
	v := h.Inner.Decide(t)
	if v.Decision != Keep {
		return v
	}
	headRate, independent := traceHeadRate(t)
	if headRate <= 1 {
		return v
	}
	if independent {
		v.SampleRate *= headRate
	} else {
		v.SampleRate = math.Max(v.SampleRate, headRate)
	}
	return v
}

// traceHeadRate returns 1/p_head for t, and whether the head decision used
// explicit randomness (rv) independent of the trace ID.
func traceHeadRate(t *Trace) (rate float64, independent bool) {
	if r := t.Root(); r != nil {
		if ts := r.TraceState(); len(ts) > 0 {
			return HeadRate(ts)
		}
		return 1, false
	}
	for i := range t.Spans {
		if ts := t.Spans[i].TraceState(); len(ts) > 0 {
			return HeadRate(ts)
		}
	}
	return 1, false
}

// HeadRate reads a W3C tracestate header value and returns the adjusted
// count 1/p_head its `ot=th:` threshold implies (1 when absent or
// malformed), and whether `ot=rv:` explicit randomness is present.
//
// th is 1 to 14 hex digits, the most significant digits of a 56-bit
// rejection threshold T (trailing zeros may be dropped, so "c" is
// 0xc0000000000000); p_head = (2^56 - T) / 2^56. "th:0" means p = 1.
func HeadRate(tracestate []byte) (rate float64, independent bool) {
	ot := tracestateMember(tracestate, "ot")
	if ot == nil {
		return 1, false
	}
	var th []byte
	for len(ot) > 0 {
		var kv []byte
		if i := bytes.IndexByte(ot, ';'); i >= 0 {
			kv, ot = ot[:i], ot[i+1:]
		} else {
			kv, ot = ot, nil
		}
		switch {
		case bytes.HasPrefix(kv, []byte("th:")):
			th = kv[3:]
		case bytes.HasPrefix(kv, []byte("rv:")):
			independent = true
		}
	}
	t, ok := parseThreshold(th)
	if !ok || t == 0 {
		return 1, independent
	}
	return maxRandomness / float64(maxRandomness-t), independent
}

// parseThreshold parses th's hex digits, right-padded to 14.
func parseThreshold(th []byte) (uint64, bool) {
	if len(th) == 0 || len(th) > 14 {
		return 0, false
	}
	var t uint64
	for _, c := range th {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		default:
			return 0, false // the spec allows lower case only
		}
		t = t<<4 | uint64(d)
	}
	return t << (4 * (14 - len(th))), true
}

// tracestateMember returns the value of list member key in a W3C
// tracestate ("k1=v1,k2=v2", optional whitespace around members).
func tracestateMember(ts []byte, key string) []byte {
	for len(ts) > 0 {
		var m []byte
		if i := bytes.IndexByte(ts, ','); i >= 0 {
			m, ts = ts[:i], ts[i+1:]
		} else {
			m, ts = ts, nil
		}
		m = bytes.TrimSpace(m)
		if len(m) > len(key) && m[len(key)] == '=' && string(m[:len(key)]) == key {
			return m[len(key)+1:]
		}
	}
	return nil
}

var _ Policy = HeadSampling{}
