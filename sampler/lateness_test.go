package sampler

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestLateSpanAccounting: spans arriving after their trace's decision are
// observed by how late they are, and those that would have kept a dropped
// trace are counted by reason and logged once a minute with the setting to
// raise.
func TestLateSpanAccounting(t *testing.T) {
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	cfg := Config{Shards: 1, QuietPeriod: 3 * time.Second, MaxWait: 30 * time.Second}
	var logged bytes.Buffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	lat, err := NewLatencyPolicy(2 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s := New(cfg, Chain{ErrorPolicy{}, lat, dropAll}, make(chan *Kept, 16), m, nil)
	sh := s.shards[0]

	// Exported at zero before any span.
	if n := testutil.CollectAndCount(m.late.changing); n != len(lateReasons) {
		t.Fatalf("decision-changing counter has %d series at start, want %d", n, len(lateReasons))
	}

	// Four traces decided and dropped at t0+3s.
	for i := byte(1); i <= 4; i++ {
		root := item(tid(i), true, false, nil)
		sh.add(ctx, &root, t0)
	}
	sh.expire(ctx, t0.Add(3*time.Second))

	// An ordinary late span: observed, changes nothing.
	plain := item(tid(1), false, false, nil)
	sh.add(ctx, &plain, t0.Add(4*time.Second))
	// An error span 6.2s after the decision: counted, and advised.
	errSpan := item(tid(2), false, true, nil)
	sh.add(ctx, &errSpan, t0.Add(9200*time.Millisecond))
	// A slow span a little later: counted, not logged again within a minute.
	slow := item(tid(3), false, false, nil)
	slow.Span.End = slow.Span.Start + int64(5*time.Second)
	sh.add(ctx, &slow, t0.Add(10*time.Second))
	sh.publish()

	if got := testutil.ToFloat64(m.late.changing.WithLabelValues(lateError)); got != 1 {
		t.Errorf("error late spans counted %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.late.changing.WithLabelValues(lateSlow)); got != 1 {
		t.Errorf("slow late spans counted %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.late.changing.WithLabelValues(lateRule)); got != 0 {
		t.Errorf("rule late spans counted %v, want 0", got)
	}
	want := `
# HELP tailsift_sampler_span_lateness_seconds How long after its trace was decided a late span arrived, in record time. Spans whose trace's decision time was already forgotten are not observed.
# TYPE tailsift_sampler_span_lateness_seconds histogram
tailsift_sampler_span_lateness_seconds_bucket{le="0.1"} 0
tailsift_sampler_span_lateness_seconds_bucket{le="0.5"} 0
tailsift_sampler_span_lateness_seconds_bucket{le="1"} 1
tailsift_sampler_span_lateness_seconds_bucket{le="2"} 1
tailsift_sampler_span_lateness_seconds_bucket{le="3"} 1
tailsift_sampler_span_lateness_seconds_bucket{le="5"} 1
tailsift_sampler_span_lateness_seconds_bucket{le="7"} 3
tailsift_sampler_span_lateness_seconds_bucket{le="10"} 3
tailsift_sampler_span_lateness_seconds_bucket{le="15"} 3
tailsift_sampler_span_lateness_seconds_bucket{le="20"} 3
tailsift_sampler_span_lateness_seconds_bucket{le="30"} 3
tailsift_sampler_span_lateness_seconds_bucket{le="60"} 3
tailsift_sampler_span_lateness_seconds_bucket{le="+Inf"} 3
tailsift_sampler_span_lateness_seconds_sum 14.2
tailsift_sampler_span_lateness_seconds_count 3
`
	if err := testutil.CollectAndCompare(&m.late.lateness, strings.NewReader(want)); err != nil {
		t.Error(err)
	}

	lines := strings.Split(strings.TrimSpace(logged.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "error span arrived 6.2s after its trace was decided and dropped; raise sampler.quiet_period above 10s") {
		t.Errorf("advice logged:\n%s", logged.String())
	}
	// A minute later the next line names the greatest lateness since.
	again := item(tid(4), false, true, nil)
	sh.add(ctx, &again, t0.Add(70*time.Second))
	lines = strings.Split(strings.TrimSpace(logged.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "error span arrived 1m7s after its trace was decided and dropped; raise sampler.quiet_period above 1m11s") {
		t.Errorf("advice logged:\n%s", logged.String())
	}
}

// TestLatenessForgetsByOverwriting: a slot taken by a later trace makes the
// earlier trace's lateness unknown rather than wrong.
func TestLatenessForgetsByOverwriting(t *testing.T) {
	l := newLateness(0)
	now := time.Unix(1_700_000_000, 0).UnixNano()
	a := tid(1)
	l.decided(&a, now)
	if d := l.since(&a, now+int64(1500*time.Millisecond)); d != 1500*time.Millisecond {
		t.Fatalf("since = %v, want 1.5s", d)
	}
	i, _ := l.slot(&a)
	// Find another ID with the same slot and overwrite it.
	for n := 2; ; n++ {
		b := TraceID{0: byte(n), 1: byte(n >> 8), 15: 7}
		if j, _ := l.slot(&b); j == i {
			l.decided(&b, now)
			break
		}
	}
	if d := l.since(&a, now); d != -1 {
		t.Fatalf("since of an overwritten trace = %v, want -1 (unknown)", d)
	}
}

// TestLateSpanChangesOnlyWhatThePoliciesWould: an error span is not
// counted as decision-changing when no policy keeps error traces.
func TestLateSpanChangesOnlyWhatThePoliciesWould(t *testing.T) {
	lat, err := NewLatencyPolicy(2 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var l lateness
	errSpan := item(tid(1), false, true, nil)
	for _, c := range []struct {
		p    Policy
		want string
	}{
		{Chain{ErrorPolicy{}, lat}, lateError},
		{Chain{lat, dropAll}, ""},
		{HeadSampling{Inner: Chain{dropAll, ErrorPolicy{}}}, lateError}, // dropAll samples: passed over
	} {
		if got := l.changes(c.p, &errSpan); got != c.want {
			t.Errorf("%v: changes = %q, want %q", c.p, got, c.want)
		}
	}
}
