package sampler

import (
	"fmt"
	"time"
)

// LatencyPolicy keeps traces whose duration is at least a threshold: by
// default the root span's duration (or the whole trace's extent when the root
// is missing), or with WholeTrace always the extent from the earliest span
// start to the latest span end, which also catches slow asynchronous work
// that outlives the request.
//
// What counts as slow differs by endpoint (a 500ms checkout is slow, a 500ms
// report export is not), so thresholds can be overridden per service and per
// route; the most specific one applies: route, then service, then Threshold.
type LatencyPolicy struct {
	Threshold time.Duration
	reason    string

	wholeTrace bool
	perService map[string]latencyOverride
	perRoute   map[string]latencyOverride // key: service + " " + route
}

type latencyOverride struct {
	threshold time.Duration
	reason    string
}

// LatencyConfig configures NewLatency.
type LatencyConfig struct {
	// Threshold applies to traces no override matches. Must be positive.
	Threshold time.Duration
	// WholeTrace measures from the earliest span start to the latest span
	// end instead of the root span's duration. Default false.
	WholeTrace bool
	// PerService overrides Threshold for traces whose root service (the
	// first span's when the root is missing) is the key.
	PerService map[string]time.Duration
	// PerRoute overrides Threshold and PerService for traces whose root
	// matches the key "<service> <route>", where route is what
	// Trace.Route returns, e.g. "checkout POST /cart". A trace without a
	// root has no route.
	PerRoute map[string]time.Duration
}

// NewLatencyPolicy returns a LatencyPolicy; the threshold must be positive.
func NewLatencyPolicy(threshold time.Duration) (*LatencyPolicy, error) {
	return NewLatency(LatencyConfig{Threshold: threshold})
}

// NewLatency returns a LatencyPolicy with overrides; every threshold must be
// positive.
func NewLatency(cfg LatencyConfig) (*LatencyPolicy, error) {
	if cfg.Threshold <= 0 {
		return nil, fmt.Errorf("latency threshold must be positive, got %v", cfg.Threshold)
	}
	p := &LatencyPolicy{Threshold: cfg.Threshold, reason: latencyReason(cfg.Threshold), wholeTrace: cfg.WholeTrace}
	var err error
	if p.perService, err = latencyOverrides("per_service", cfg.PerService); err != nil {
		return nil, err
	}
	if p.perRoute, err = latencyOverrides("per_route", cfg.PerRoute); err != nil {
		return nil, err
	}
	return p, nil
}

func latencyReason(d time.Duration) string { return "latency>=" + d.String() }

// latencyOverrides builds the reasons once, so Decide never formats.
func latencyOverrides(what string, in map[string]time.Duration) (map[string]latencyOverride, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make(map[string]latencyOverride, len(in))
	for k, d := range in {
		if d <= 0 {
			return nil, fmt.Errorf("latency %s[%q] must be positive, got %v", what, k, d)
		}
		out[k] = latencyOverride{threshold: d, reason: latencyReason(d)}
	}
	return out, nil
}

// Name implements Policy.
func (p *LatencyPolicy) Name() string { return "latency" }

// Decide implements Policy.
func (p *LatencyPolicy) Decide(t *Trace) Verdict {
	d := t.Duration()
	if p.wholeTrace {
		d = t.Extent()
	}
	threshold, reason := p.threshold(t)
	if d >= threshold {
		return Verdict{Decision: Keep, SampleRate: 1, Reason: reason}
	}
	return Verdict{}
}

// threshold picks the most specific threshold for t. The route key is built
// in a stack buffer and looked up without converting it to a string.
func (p *LatencyPolicy) threshold(t *Trace) (time.Duration, string) {
	svc := t.RootService()
	if len(p.perRoute) > 0 && t.Root() != nil {
		var buf [128]byte
		k := append(buf[:0], svc...)
		k = append(k, ' ')
		k = t.appendRoute(k)
		if o, ok := p.perRoute[string(k)]; ok {
			return o.threshold, o.reason
		}
	}
	if o, ok := p.perService[svc]; ok {
		return o.threshold, o.reason
	}
	return p.Threshold, p.reason
}

var _ Policy = (*LatencyPolicy)(nil)
