package main

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"
)

// descRecorder registers collectors with a registry and records the names
// of every metric they describe, whether or not a series exists yet.
type descRecorder struct {
	prometheus.Registerer
	names map[string]bool
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *descRecorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
	return r.Registerer.Register(c)
}

func (r *descRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// nodeMetricNames builds a cluster node with a cost cap (the configuration
// that registers the most metrics) and returns every metric name it
// registers.
func nodeMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	cfg := defaultConfig()
	cfg.HTTP.Addr = ""
	cfg.Archive.URL = "file://" + t.TempDir()
	cfg.Cluster.GossipAddr = "127.0.0.1:0"
	cfg.Cluster.ForwardAddr = "127.0.0.1:0"
	cfg.Cluster.Insecure = true
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte("spans_per_second: 1000\n"), &doc); err != nil {
		t.Fatal(err)
	}
	cfg.Budget = *doc.Content[0]
	rec := &descRecorder{names: map[string]bool{}}
	n, err := newNode(cfg, testLogWriter{t}, withRegisterer(func(reg *prometheus.Registry) prometheus.Registerer {
		rec.Registerer = reg
		return rec
	}))
	if err != nil {
		t.Fatal(err)
	}
	n.cluster.close()
	n.consumer.Client().Close()
	return rec.names
}

// TestDashboardMetricsExist checks that every metric the Grafana dashboard
// queries is one a node registers, so a renamed metric cannot leave a panel
// silently empty.
func TestDashboardMetricsExist(t *testing.T) {
	dash := loadDashboard(t)
	var exprs []string
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		exprs = append(exprs, v.Definition)
	}

	registered := nodeMetricNames(t)
	metricRE := regexp.MustCompile(`\b(?:tailsift|process|go)_[a-z0-9_]+\b`)
	used := map[string]bool{}
	for _, e := range exprs {
		for _, name := range metricRE.FindAllString(e, -1) {
			used[name] = true
			base := name
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(name, suffix); ok && registered[b] {
					base = b
				}
			}
			if !registered[base] {
				t.Errorf("the dashboard queries %s, which no node registers (in %q)", name, e)
			}
		}
	}
	// The signals the dashboard exists to show.
	for _, want := range []string{
		"tailsift_router_spans_received_total", "tailsift_router_consumer_lag_records", "tailsift_router_unsettled_oldest_age_seconds",
		"tailsift_sampler_traces_decided_total", "tailsift_sampler_spans_kept_total", "tailsift_sampler_budget_spans_per_second",
		"tailsift_archive_bytes_written_total", "tailsift_archive_spool_files", "tailsift_cluster_members",
		"tailsift_cluster_ownership_share", "tailsift_router_forwarded_spans_total", "tailsift_router_malformed_messages_total",
		"tailsift_sampler_late_spans_total", "tailsift_sampler_orphan_spans_total", "tailsift_router_skewed_spans_total",
		"tailsift_sampler_traces_without_root_total", "tailsift_sampler_decision_wait_seconds_bucket",
		"tailsift_sampler_span_lateness_seconds_bucket", "tailsift_sampler_late_decision_changing_spans_total",
	} {
		if !used[want] {
			t.Errorf("the dashboard does not show %s", want)
		}
	}
	var unused []string
	for name := range registered {
		if strings.HasPrefix(name, "tailsift_") && !used[name] && !used[name+"_bucket"] {
			unused = append(unused, name)
		}
	}
	slices.Sort(unused)
	t.Logf("%d panels, %d metrics queried; tailsift metrics not on the dashboard: %v", len(dash.Panels), len(used), unused)
}

// grafanaDashboard is what the tests read of deploy/grafana/tailsift.json.
type grafanaDashboard struct {
	Title  string `json:"title"`
	Panels []struct {
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
	Templating struct {
		List []struct {
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

func loadDashboard(t *testing.T) grafanaDashboard {
	t.Helper()
	data, err := os.ReadFile("../../deploy/grafana/tailsift.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash grafanaDashboard
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	return dash
}
