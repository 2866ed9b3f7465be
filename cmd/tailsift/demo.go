package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/tailsift/tailsift/bench/gen"
	"github.com/tailsift/tailsift/router/broker"
	"github.com/twmb/franz-go/pkg/kgo"
)

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", stderr)
	dir := fs.String("dir", "./tailsift-data", "archive directory")
	traces := fs.Int("traces", 20_000, "traces to generate")
	seed := fs.Int64("seed", 1, "generator seed")
	partitions := fs.Int("partitions", 8, "partitions of the embedded topic")
	logLevel := fs.String("log-level", "warn", "node log level")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *traces < 1 {
		return errors.New("--traces: must be at least 1")
	}
	absDir, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if err := clearEarlierDemo(stdout, absDir); err != nil {
		return err
	}
	start := time.Now()

	const topic = "otlp_spans"
	b, err := broker.Start(broker.Config{Addr: "127.0.0.1:0", Topic: topic, Partitions: int32(*partitions)})
	if err != nil {
		return fmt.Errorf("embedded broker: %w", err)
	}
	defer b.Close()
	fmt.Fprintf(stdout, "embedded Kafka broker on %s, topic %s (%d partitions)\n", b.Addr(), topic, *partitions)

	cfg := defaultConfig()
	cfg.NodeID = demoNode
	cfg.HTTP.Addr = ""
	cfg.Log.Level = *logLevel
	cfg.Log.ProgressInterval = 0 // the demo prints its own live line
	cfg.Kafka.Brokers = []string{b.Addr()}
	cfg.Kafka.Topic = topic
	cfg.Archive.URL = "file://" + absDir
	cfg.Sampler.QuietPeriod = time.Second
	cfg.Sampler.MaxWait = 10 * time.Second
	n, done, err := newNodeProcess(cfg, stderr)
	if err != nil {
		return err
	}
	defer done()
	nodeCtx, stopNode := context.WithCancel(ctx)
	defer stopNode()
	nodeDone := make(chan error, 1)
	go func() { nodeDone <- n.run(nodeCtx) }()

	client, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.DefaultProduceTopic(topic),
		kgo.ProducerBatchMaxBytes(16<<20))
	if err != nil {
		return err
	}
	defer client.Close()
	gcfg := gen.Config{Seed: *seed, Traces: *traces}
	fmt.Fprintf(stdout, "generating %d traces (seed %d) into the topic...\n", *traces, *seed)
	truth, err := gen.Produce(ctx, client, topic, gcfg)
	if err != nil {
		return fmt.Errorf("generator: %w", err)
	}
	fmt.Fprintf(stdout, "produced %d spans in %d traces (%d with errors, %d slow) as %d messages\n",
		truth.Spans, truth.Traces, len(truth.ErrorTraces), len(truth.SlowTraces), truth.Messages)

	// Wait for the node to read everything and decide every trace the way
	// it does in production (root seen and quiet, or the maximum wait),
	// with a progress line: redrawn in place on a terminal, a line a second
	// elsewhere (a pipe, a CI log), where carriage returns would make one
	// long line.
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	live := isTerminal(stdout)
	var printed time.Time
	deadline := time.Now().Add(90 * time.Second)
	for {
		buffered := gauge(n.reg, "tailsift_sampler_buffered_traces")
		consumed := n.consumer.Records()
		line := fmt.Sprintf("consumed %d/%d messages · buffered %.0f traces · kept %.0f traces",
			consumed, truth.Messages, buffered, sumCounter(n.reg, "tailsift_sampler_traces_decided_total", "decision", "keep"))
		// Every span must have reached the sampler and been decided: a
		// message counts as consumed when it is scanned, before its spans
		// reach the shards.
		decided := sumCounter(n.reg, "tailsift_sampler_spans_kept_total", "", "") + sumCounter(n.reg, "tailsift_sampler_spans_dropped_total", "", "")
		finished := consumed >= int64(truth.Messages) && buffered == 0 && decided >= float64(truth.Spans)
		switch {
		case live:
			fmt.Fprintf(stdout, "\r%s   ", line)
		case finished || time.Since(printed) >= time.Second:
			fmt.Fprintln(stdout, line)
			printed = time.Now()
		}
		if finished {
			break
		}
		if time.Now().After(deadline) {
			if consumed < int64(truth.Messages) {
				return errors.New("the node did not consume the generated messages within 90s")
			}
			break // Flush below decides the rest
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-nodeDone:
			return fmt.Errorf("node stopped early: %v", err)
		case <-tick.C:
		}
	}
	if live {
		fmt.Fprintln(stdout)
	}
	// The input is complete: decide what is still buffered, then stop the
	// node the way SIGTERM does, which closes and syncs the archive files.
	if err := n.sampler.Flush(ctx); err != nil {
		return err
	}
	stopNode()
	if err := <-nodeDone; err != nil {
		return err
	}
	return demoSummary(stdout, n, truth, absDir, time.Since(start))
}

// demoNode names the demo's node, and so its archive files.
const demoNode = "demo"

// clearEarlierDemo removes the files an earlier demo wrote in dir, so that
// the summary and the DuckDB query it prints count this run only, and says
// so. Any other Parquet file there (a node's, a compacted one) is not the
// demo's to delete: the demo refuses to mix with it.
func clearEarlierDemo(w io.Writer, dir string) error {
	var earlier, other []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".parquet") {
			return err
		}
		if strings.HasPrefix(d.Name(), "part-"+demoNode+"-") {
			earlier = append(earlier, path)
		} else {
			other = append(other, path)
		}
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if len(other) > 0 {
		return fmt.Errorf("%s holds %d Parquet files the demo did not write (e.g. %s); give the demo a directory of its own with --dir",
			dir, len(other), other[0])
	}
	for _, p := range earlier {
		if err := os.Remove(p); err != nil {
			return err
		}
	}
	if len(earlier) > 0 {
		fmt.Fprintf(w, "removed %d Parquet files of an earlier demo from %s: the counts below are this run's\n", len(earlier), dir)
	}
	return nil
}

// isTerminal reports whether w is a terminal, where a line can be redrawn.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func demoSummary(w io.Writer, n *node, truth *gen.Truth, dir string, elapsed time.Duration) error {
	fmt.Fprintf(w, "\ndone in %.1fs\n", elapsed.Seconds())
	fmt.Fprintf(w, "spans in:     %.0f (%d produced)\n", sumCounter(n.reg, "tailsift_router_spans_received_total", "", ""), truth.Spans)
	fmt.Fprintf(w, "spans kept:   %.0f\n", sumCounter(n.reg, "tailsift_sampler_spans_kept_total", "", ""))
	fmt.Fprintln(w, "traces kept by reason:")
	reasons := counterByLabel(n.reg, "tailsift_sampler_traces_decided_total", "decision", "keep", "reason")
	keys := make([]string, 0, len(reasons))
	for k := range reasons {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %-24s %8.0f\n", k, reasons[k])
	}
	fmt.Fprintf(w, "traces dropped: %.0f\n", sumCounter(n.reg, "tailsift_sampler_traces_decided_total", "decision", "drop"))
	var files int
	var bytes int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".parquet") {
			return err
		}
		info, err := d.Info()
		if err == nil {
			files++
			bytes += info.Size()
		}
		return err
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	fmt.Fprintf(w, "files written: %d Parquet files, %d bytes, under %s\n", files, bytes, dir)
	fmt.Fprintf(w, `
query them with DuckDB:

  duckdb -c "SELECT keep_reason, count(DISTINCT trace_id) AS traces, count(*) AS spans,
             round(sum(sample_rate) FILTER (WHERE parent_span_id = '')) AS estimated_traces
             FROM read_parquet('%s/**/*.parquet', hive_partitioning = true)
             GROUP BY keep_reason ORDER BY traces DESC"
`, dir)
	return nil
}

// metric helpers read the node's own registry for the summary.

func gather(reg *prometheus.Registry, name string) []*dto.Metric {
	mfs, err := reg.Gather()
	if err != nil {
		return nil
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()
		}
	}
	return nil
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func gauge(reg *prometheus.Registry, name string) float64 {
	var v float64
	for _, m := range gather(reg, name) {
		v += m.GetGauge().GetValue()
	}
	return v
}

// maxGauge is the largest value of a gauge's series, 0 without any.
func maxGauge(reg *prometheus.Registry, name string) float64 {
	var v float64
	for _, m := range gather(reg, name) {
		v = max(v, m.GetGauge().GetValue())
	}
	return v
}

// sumCounter sums a counter's series, those with label=value when label is set.
func sumCounter(reg *prometheus.Registry, name, label, value string) float64 {
	var v float64
	for _, m := range gather(reg, name) {
		if label == "" || labelValue(m, label) == value {
			v += m.GetCounter().GetValue()
		}
	}
	return v
}

func counterByLabel(reg *prometheus.Registry, name, label, value, by string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range gather(reg, name) {
		if labelValue(m, label) == value {
			out[labelValue(m, by)] += m.GetCounter().GetValue()
		}
	}
	return out
}
