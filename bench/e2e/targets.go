package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// target is one tail sampler under test: how to start it and how to read
// its progress from its own metrics. Progress is read from metrics because
// it is the only view both processes give; cost (CPU, memory) is read from
// the kernel, the same way for both.
type target struct {
	name string
	// argv is the command line of a run that reads topic from the start as
	// group and serves metrics on metricsAddr. With hold, the sampler waits
	// long enough before deciding that the whole backlog is buffered at once.
	argv func(dir, topic, group, metricsAddr string, hold bool) ([]string, error)
	// spansIn names the counter of spans read from Kafka.
	spansIn string
	// decided returns the traces decided so far, and whether the process
	// exports that count.
	decided func(samples) (float64, bool)
	// kept returns the traces kept so far.
	kept func(samples) float64
	// buffered returns the spans buffered now and their encoded bytes, when
	// the process exports them.
	buffered func(samples) (spans, bytes float64, ok bool)
	// archived returns the spans written to the archive, when there is one.
	archived func(samples) (spans float64, ok bool)
	// archiveDir is where a run's archive files are, "" for none.
	archiveDir func(dir, group string) string
}

// Decision timing of both samplers in the drain runs: a trace is decided
// about 3s after its spans stop arriving. tailsift waits for a quiet period
// after the root (measured in Kafka record time); the Collector waits
// decision_wait (wall time) after the trace's first span.
const decisionWait = 3 * time.Second

// slowThreshold is the latency both samplers keep every trace above; it is
// tailsift's default policy (errors, slower than 2s, 5% of the rest).
const slowThreshold = 2 * time.Second

func tailsiftTarget(bin, brokers string, hold time.Duration) target {
	archiveDir := func(dir, group string) string { return filepath.Join(dir, "archive-"+group) }
	return target{
		name: "tailsift",
		argv: func(dir, topic, group, metricsAddr string, holdAll bool) ([]string, error) {
			argv := []string{bin, "run",
				"--node-id", "bench",
				"--brokers", brokers, "--topic", topic, "--group", group,
				"--archive", "file://" + archiveDir(dir, group),
				"--http-addr", metricsAddr,
				"--log-level", "warn",
				// Files close after 5s, so the group's committed offsets
				// (settled only once kept spans are durable) catch up
				// soon after the last decision, not at the 5m default.
				"--archive-roll-age", "5s",
			}
			if !holdAll {
				return append(argv, "--quiet-period", decisionWait.String()), nil
			}
			return append(argv, "--quiet-period", hold.String(), "--max-wait", (2 * hold).String(),
				// The 1GiB default would decide the oldest traces early
				// on a large backlog and hide the cost of buffering it.
				"--max-buffered-bytes", "16GiB"), nil
		},
		spansIn: "tailsift_router_spans_received_total",
		decided: func(s samples) (float64, bool) {
			return s.sum("tailsift_sampler_traces_decided_total"), true
		},
		kept: func(s samples) float64 { return s.sumWhere("tailsift_sampler_traces_decided_total", `decision="keep"`) },
		buffered: func(s samples) (float64, float64, bool) {
			return s.sum("tailsift_sampler_buffered_spans"), s.sum("tailsift_sampler_buffered_bytes"),
				s.has("tailsift_sampler_buffered_spans")
		},
		archived: func(s samples) (float64, bool) {
			return s.sum("tailsift_archive_spans_written_total"), s.has("tailsift_archive_spans_written_total")
		},
		archiveDir: archiveDir,
	}
}

// otelcolTarget runs the Collector built by otelcol.sh with the policies
// tailsift applies by default: every trace with an ERROR span, every trace
// slower than 2s, and 5% of the rest. num_traces is raised above the number
// of traces so the Collector never evicts undecided traces, which would make
// it cheaper than tailsift by doing less.
func otelcolTarget(bin, brokers string, traces int, hold time.Duration) target {
	const tsMetric = "otelcol_processor_tail_sampling_global_count_traces_sampled"
	return target{
		name: "otelcol",
		argv: func(dir, topic, group, metricsAddr string, holdAll bool) ([]string, error) {
			host, port, err := net.SplitHostPort(metricsAddr)
			if err != nil {
				return nil, err
			}
			wait := decisionWait
			if holdAll {
				wait = hold
			}
			cfg := fmt.Sprintf(otelcolConfig, brokers, group, topic, wait, max(2*traces, 50_000),
				slowThreshold.Milliseconds(), host, port)
			path := filepath.Join(dir, "otelcol-"+group+".yaml")
			if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
				return nil, err
			}
			return []string{bin, "--config", "file:" + path}, nil
		},
		spansIn: "otelcol_receiver_accepted_spans",
		decided: func(s samples) (float64, bool) { return s.sum(tsMetric), s.has(tsMetric) },
		kept:    func(s samples) float64 { return s.sumWhere(tsMetric, `sampled="true"`) },
		buffered: func(samples) (float64, float64, bool) {
			// The processor exports traces held, not spans.
			return 0, 0, false
		},
		archived:   func(samples) (float64, bool) { return 0, false },
		archiveDir: func(string, string) string { return "" },
	}
}

// otelcolConfig: brokers, group, topic, decision_wait, num_traces, latency
// threshold in ms, metrics host and port. Only the three components the
// benchmark compares are in the pipeline; internal metrics listen on
// loopback.
const otelcolConfig = `receivers:
  kafka:
    brokers: [%q]
    group_id: %q
    client_id: tailsift-bench
    initial_offset: earliest
    traces:
      topics: [%q]
      encoding: otlp_proto
processors:
  tail_sampling:
    decision_wait: %s
    num_traces: %d
    policies:
      - name: errors
        type: status_code
        status_code: {status_codes: [ERROR]}
      - name: slow
        type: latency
        latency: {threshold_ms: %d}
      - name: sample-5pct
        type: probabilistic
        probabilistic: {sampling_percentage: 5}
exporters:
  nop:
service:
  telemetry:
    logs: {level: warn}
    metrics:
      level: normal
      readers:
        - pull:
            exporter:
              prometheus:
                host: %q
                port: %s
  pipelines:
    traces:
      receivers: [kafka]
      processors: [tail_sampling]
      exporters: [nop]
`
