package main

import (
	"strings"
	"testing"
	"time"
)

// The benchmark's numbers are only as good as these parsers, and /proc and
// the two exporters' text formats have corners (spaces in names and label
// values, _total suffixes) that a wrong count would not reveal.

func TestParseStatCPU(t *testing.T) {
	// Field 2 may hold spaces and ')'; utime=250 and stime=50 ticks.
	line := "4242 (otel col) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 100 0 0\n"
	got, err := parseStatCPU([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 * time.Second; got != want {
		t.Fatalf("got %v, want %v", got, want)
	}
	if _, err := parseStatCPU([]byte("4242 (short) S 1")); err == nil {
		t.Fatal("short line: want an error")
	}
}

func TestParseStatusMemory(t *testing.T) {
	status := "Name:\ttailsift\nVmPeak:\t 900000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t9\n"
	rss, hwm, err := parseStatusMemory([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	if rss != 100<<20 || hwm != 200<<20 {
		t.Fatalf("rss=%d hwm=%d, want %d and %d", rss, hwm, 100<<20, 200<<20)
	}
	if _, _, err := parseStatusMemory([]byte("Name:\tx\n")); err == nil {
		t.Fatal("no Vm lines: want an error")
	}
}

func TestParseProm(t *testing.T) {
	text := `# HELP tailsift_sampler_traces_decided_total Traces decided.
# TYPE tailsift_sampler_traces_decided_total counter
tailsift_sampler_traces_decided_total{decision="keep",reason="error"} 20
tailsift_sampler_traces_decided_total{decision="drop",reason="a b}c"} 70
tailsift_sampler_buffered_spans 0
otelcol_receiver_accepted_spans_total{receiver="kafka",transport="kafka"} 1.5e+06 1700000000000
otelcol_processor_tail_sampling_global_count_traces_sampled_total{sampled="true"} 5
otelcol_processor_tail_sampling_global_count_traces_sampled_total{sampled="false"} 95
go_gc_duration_seconds{quantile="0.5"} NaN
`
	s, err := parseProm(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, got, want float64) {
		t.Helper()
		if got != want {
			t.Errorf("%s: got %v, want %v", name, got, want)
		}
	}
	check("decided", s.sum("tailsift_sampler_traces_decided_total"), 90)
	check("kept", s.sumWhere("tailsift_sampler_traces_decided_total", `decision="keep"`), 20)
	check("accepted, name without _total", s.sum("otelcol_receiver_accepted_spans"), 1.5e6)
	check("otel decided", s.sum("otelcol_processor_tail_sampling_global_count_traces_sampled"), 100)
	check("otel kept", s.sumWhere("otelcol_processor_tail_sampling_global_count_traces_sampled", `sampled="true"`), 5)
	if !s.has("tailsift_sampler_buffered_spans") || s.has("tailsift_sampler_buffered") {
		t.Error("has: exact names only (plus _total)")
	}
	if _, err := parseProm(strings.NewReader("metric_without_value\n")); err == nil {
		t.Error("line without a value: want an error")
	}
}

func TestParseGen(t *testing.T) {
	out := "produced 2087406 spans in 260000 traces (5200 with errors, 5187 slow) as 41749 messages to otlp_spans in 31.2s\ntraces by root service:\n  cart 1\n"
	got, err := parseGen([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := backlog{spans: 2087406, traces: 260000, errors: 5200, slow: 5187, messages: 41749}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if _, err := parseGen([]byte("gen: producing to otlp_spans: context canceled\n")); err == nil {
		t.Fatal("no summary line: want an error")
	}
}

func TestIdleSince(t *testing.T) {
	s := func(at, cpu float64) cpuSample {
		return cpuSample{at: time.Duration(at * float64(time.Second)), cpu: time.Duration(cpu * float64(time.Second))}
	}
	// Busy until 3s (1 core), then 0.01 cores.
	hist := []cpuSample{s(0, 0), s(1, 1), s(2, 2), s(3, 3), s(4, 3.01), s(5, 3.02)}
	got, ok := idleSince(hist, 2*time.Second, 0.05)
	if !ok || got != hist[3] {
		t.Fatalf("got %+v %v, want the sample at 3s, idle", got, ok)
	}
	if _, ok := idleSince(hist[:5], 2*time.Second, 0.05); ok {
		t.Fatal("the window from 2s to 4s holds a busy second: want not idle")
	}
	if _, ok := idleSince(hist[4:], 2*time.Second, 0.05); ok {
		t.Fatal("history shorter than the window: want not idle")
	}
}

func TestMedianRound(t *testing.T) {
	pair := func(ts, oc float64) []*result {
		return []*result{{cpu: time.Duration(ts * float64(time.Second))}, {cpu: time.Duration(oc * float64(time.Second))}}
	}
	for _, tc := range []struct {
		rounds [][]*result
		want   int
	}{
		{[][]*result{pair(4.8, 40), pair(4.5, 50), pair(4.4, 42)}, 2}, // ratios 0.120, 0.090, 0.105
		{[][]*result{pair(4.8, 40), pair(4.5, 50)}, 1},                // the lower of two
		{[][]*result{pair(4.8, 40)}, 0},
		{[][]*result{{{cpu: 3 * time.Second}}, {{cpu: time.Second}}, {{cpu: 2 * time.Second}}}, 2}, // tailsift only
	} {
		if got := medianRound(tc.rounds); got != tc.want {
			t.Errorf("medianRound = %d, want %d", got, tc.want)
		}
	}
}
