package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/tailsift/tailsift/bench/gen"
)

// scrapeMetrics reads a node's /metrics over HTTP, as Prometheus does.
func scrapeMetrics(t *testing.T, addr string) metricSet {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics is not valid Prometheus text: %v", err)
	}
	return mfs
}

type metricSet map[string]*dto.MetricFamily

// sum adds the series of name whose labels include every label=value pair
// of match ("k=v" strings).
func (m metricSet) sum(name string, match ...string) float64 {
	var v float64
	mf := m[name]
	if mf == nil {
		return -1
	}
series:
	for _, s := range mf.GetMetric() {
		for _, kv := range match {
			k, want, _ := strings.Cut(kv, "=")
			if labelValue(s, k) != want {
				continue series
			}
		}
		switch {
		case s.Counter != nil:
			v += s.GetCounter().GetValue()
		case s.Gauge != nil:
			v += s.GetGauge().GetValue()
		case s.Histogram != nil:
			v += float64(s.GetHistogram().GetSampleCount())
		}
	}
	return v
}

// TestMetricsAgreeWithInputAndArchive scrapes /metrics while a node works
// and after it has archived everything, and checks the counters against
// the generator's ground truth and the rows in the archive. It also checks
// the progress log line and that pprof is served only when enabled.
func TestMetricsAgreeWithInputAndArchive(t *testing.T) {
	const topic = "otlp_spans"
	b, client := startBroker(t, 4)
	ctx := context.Background()

	dir := t.TempDir()
	logs := &syncBuffer{}
	n, stop := startTestNodeLog(t, b.Addr(), topic, dir, func(c *Config) {
		c.Log.Format = "json"
		c.Log.Level = "info"
		c.Log.ProgressInterval = time.Second
		c.HTTP.PProf = true
		c.Archive.RollAge = time.Second
	}, logs)
	addr := n.httpLn.Addr().String()

	// First half, scraped while the node works on it.
	truth1, err := gen.Produce(ctx, client, topic, gen.Config{Seed: 11, Traces: 2500})
	if err != nil {
		t.Fatal(err)
	}
	var m metricSet
	waitFor(t, 2*time.Minute, func() bool {
		m = scrapeMetrics(t, addr)
		return m.sum("tailsift_router_spans_received_total") == float64(truth1.Spans)
	})
	if got := m.sum("tailsift_router_records_total"); got != float64(truth1.Messages) {
		t.Errorf("during the run: records %v, want the %d produced", got, truth1.Messages)
	}
	// Every trace read is either buffered or decided, once the sampler
	// has taken what the router handed it.
	waitFor(t, time.Minute, func() bool {
		m = scrapeMetrics(t, addr)
		return m.sum("tailsift_sampler_buffered_traces")+m.sum("tailsift_sampler_traces_decided_total") == float64(truth1.Traces)
	})
	if got := m.sum("tailsift_cluster_members"); got != 1 {
		t.Errorf("a node alone reports %v ring members, want 1", got)
	}
	if got := m.sum("tailsift_cluster_ownership_share"); got != 1 {
		t.Errorf("a node alone reports an ownership share of %v, want 1", got)
	}
	waitFor(t, 30*time.Second, func() bool {
		m = scrapeMetrics(t, addr)
		lag := m["tailsift_router_consumer_lag_records"]
		return lag != nil && len(lag.GetMetric()) == 4 && m.sum("tailsift_router_consumer_lag_records") == 0
	})

	// Second half, then everything decided and written.
	truth2, err := gen.Produce(ctx, client, topic, gen.Config{Seed: 12, Traces: 2500})
	if err != nil {
		t.Fatal(err)
	}
	spans, traces := truth1.Spans+truth2.Spans, truth1.Traces+truth2.Traces
	waitSampled(t, n, spans)
	if err := n.sampler.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, func() bool {
		m = scrapeMetrics(t, addr)
		return m.sum("tailsift_archive_spans_written_total") == m.sum("tailsift_sampler_spans_kept_total")
	})
	checks := []struct {
		name      string
		got, want float64
	}{
		{"spans received", m.sum("tailsift_router_spans_received_total"), float64(spans)},
		{"records", m.sum("tailsift_router_records_total"), float64(truth1.Messages + truth2.Messages)},
		{"traces decided", m.sum("tailsift_sampler_traces_decided_total"), float64(traces)},
		{"decision latency observations", m.sum("tailsift_sampler_decision_wait_seconds"), float64(traces)},
		{"spans kept + dropped", m.sum("tailsift_sampler_spans_kept_total") + m.sum("tailsift_sampler_spans_dropped_total"), float64(spans)},
		{"error traces kept", m.sum("tailsift_sampler_traces_decided_total", "decision=keep", "reason=error"), float64(len(truth1.ErrorTraces) + len(truth2.ErrorTraces))},
		{"buffered traces", m.sum("tailsift_sampler_buffered_traces"), 0},
		{"traces without a root", m.sum("tailsift_sampler_traces_without_root_total"), 0},
		{"orphan spans", m.sum("tailsift_sampler_orphan_spans_total"), 0},
		{"malformed messages", m.sum("tailsift_router_malformed_messages_total"), 0},
		{"consumer lag", m.sum("tailsift_router_consumer_lag_records"), 0},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: /metrics says %v, want %v", c.name, c.got, c.want)
		}
	}
	kept := m.sum("tailsift_sampler_spans_kept_total")
	keptTraces := m.sum("tailsift_sampler_traces_decided_total", "decision=keep")
	files := m.sum("tailsift_archive_files_written_total")

	// pprof is on for this node.
	resp, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/debug/pprof/ with http.pprof: %d, want 200", resp.StatusCode)
	}
	stop()

	// The archive holds exactly what the counters say was kept.
	archived := archivedSpansByTrace(t, dir)
	var rows int
	for _, c := range archived {
		rows += c
	}
	if float64(rows) != kept || float64(len(archived)) != keptTraces {
		t.Errorf("archive: %d rows in %d traces; /metrics: %v spans kept in %v traces", rows, len(archived), kept, keptTraces)
	}
	parquet, _ := filepath.Glob(filepath.Join(dir, "*", "*", "*.parquet"))
	if float64(len(parquet)) != files {
		t.Errorf("%d Parquet files on disk, /metrics counted %v", len(parquet), files)
	}
	t.Logf("%d spans in %d traces produced; kept %v spans of %v traces in %d files", spans, traces, kept, keptTraces, len(parquet))

	// The progress line, once a second, with a non-zero input rate.
	var progress, busy, written int
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		if rec["msg"] == "archive file written" && rec["level"] == "INFO" {
			if p, _ := rec["path"].(string); strings.HasSuffix(p, ".parquet") && rec["spans"].(float64) > 0 && rec["bytes"].(float64) > 0 {
				written++
			}
		}
		if rec["msg"] != "progress" {
			continue
		}
		progress++
		if _, ok := rec["oldest_unsettled"].(string); !ok {
			t.Fatalf("progress line's oldest_unsettled is not a duration text: %s", l)
		}
		for _, k := range []string{"spans_in_per_s", "kept_spans_per_s", "buffered_traces", "lag_records", "unsettled_records", "open_archive_files"} {
			if _, ok := rec[k]; !ok {
				t.Fatalf("progress line lacks %s: %s", k, l)
			}
		}
		if v, _ := rec["spans_in_per_s"].(float64); v > 0 {
			busy++
		}
	}
	if float64(written) != files {
		t.Errorf("%d archive files logged as written at info, /metrics counted %v", written, files)
	}
	if progress == 0 || busy == 0 {
		t.Errorf("%d progress lines, %d with spans coming in; want some of each:\n%s", progress, busy, logs.String())
	}
}

// TestPProfOffByDefault checks the profiler is not served unless enabled.
func TestPProfOffByDefault(t *testing.T) {
	cfg := defaultConfig()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Archive.URL = "file://" + t.TempDir()
	n, err := newNode(cfg, testLogWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	defer n.httpLn.Close()
	go n.http.Serve(n.httpLn)
	defer n.http.Close()
	for path, want := range map[string]int{"/debug/pprof/": http.StatusNotFound, "/healthz": http.StatusOK} {
		resp, err := http.Get(fmt.Sprintf("http://%s%s", n.httpLn.Addr(), path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}
