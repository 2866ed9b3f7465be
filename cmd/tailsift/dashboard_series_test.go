package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/tailsift/tailsift/bench/gen"
)

// selector is one instant or range vector selector of a dashboard query:
// a metric name and its label matchers.
type selector struct {
	text     string
	name     string
	matchers []matcher
}

type matcher struct {
	label, op string
	re        *regexp.Regexp // for =~ and !~, anchored as PromQL anchors them
	value     string
}

// Selectors are found with a small extractor rather than the Prometheus
// PromQL parser, whose module would bring the Prometheus server's
// dependency tree into go.mod for one test. The dashboard's queries use
// metric names with the tailsift_, process_ and go_ prefixes, each
// optionally followed by {matchers}; a name inside a function or
// aggregation is found all the same.
var (
	selectorRE = regexp.MustCompile(`\b((?:tailsift|process|go)_[a-zA-Z0-9_:]*)\s*(\{[^}]*\})?`)
	matcherRE  = regexp.MustCompile(`\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?`)
)

func parseSelectors(t *testing.T, expr string) []selector {
	t.Helper()
	var out []selector
	for _, m := range selectorRE.FindAllStringSubmatch(expr, -1) {
		s := selector{text: m[0], name: m[1]}
		body := strings.TrimSuffix(strings.TrimPrefix(m[2], "{"), "}")
		for _, mm := range matcherRE.FindAllStringSubmatch(body, -1) {
			mt := matcher{label: mm[1], op: mm[2], value: mm[3]}
			if mt.op == "=~" || mt.op == "!~" {
				mt.re = regexp.MustCompile("^(?:" + mt.value + ")$")
			}
			s.matchers = append(s.matchers, mt)
		}
		if rest := matcherRE.ReplaceAllString(body, ""); strings.TrimSpace(rest) != "" {
			t.Fatalf("cannot read the matchers of %q in %q", m[0], expr)
		}
		out = append(out, s)
	}
	return out
}

// matches reports whether the selector selects a series of the scrape.
// Labels Prometheus adds when it scrapes (instance, job) and Grafana
// template variables ($instance) match anything.
func (s selector) matches(series []labelSet) bool {
	for _, ls := range series {
		if ls["__name__"] != s.name {
			continue
		}
		ok := true
		for _, m := range s.matchers {
			if m.label == "instance" || m.label == "job" || strings.Contains(m.value, "$") {
				continue
			}
			v := ls[m.label]
			switch m.op {
			case "=":
				ok = ok && v == m.value
			case "!=":
				ok = ok && v != m.value
			case "=~":
				ok = ok && m.re.MatchString(v)
			case "!~":
				ok = ok && !m.re.MatchString(v)
			}
		}
		if ok {
			return true
		}
	}
	return false
}

type labelSet map[string]string

// seriesOf lists the series of a scrape as Prometheus stores them: a
// histogram as its _bucket (with le), _sum and _count series.
func seriesOf(m metricSet) []labelSet {
	var out []labelSet
	for name, mf := range m {
		for _, s := range mf.GetMetric() {
			base := labelSet{}
			for _, l := range s.GetLabel() {
				base[l.GetName()] = l.GetValue()
			}
			with := func(name string, extra ...string) labelSet {
				ls := labelSet{"__name__": name}
				for k, v := range base {
					ls[k] = v
				}
				for i := 0; i+1 < len(extra); i += 2 {
					ls[extra[i]] = extra[i+1]
				}
				return ls
			}
			switch mf.GetType() {
			case dto.MetricType_HISTOGRAM:
				for _, b := range s.GetHistogram().GetBucket() {
					out = append(out, with(name+"_bucket", "le", fmt.Sprint(b.GetUpperBound())))
				}
				out = append(out, with(name+"_bucket", "le", "+Inf"), with(name+"_sum"), with(name+"_count"))
			case dto.MetricType_SUMMARY:
				out = append(out, with(name), with(name+"_sum"), with(name+"_count"))
			default:
				out = append(out, with(name))
			}
		}
	}
	return out
}

// dashboardSelectors returns every selector of every query of the
// dashboard, panels and template variables, keyed by its text.
func dashboardSelectors(t *testing.T) map[string]selector {
	t.Helper()
	dash := loadDashboard(t)
	var exprs []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		exprs = append(exprs, v.Definition)
	}
	out := map[string]selector{}
	for _, e := range exprs {
		for _, s := range parseSelectors(t, e) {
			out[s.text] = s
		}
	}
	if len(out) < 40 {
		t.Fatalf("only %d selectors found in the dashboard", len(out))
	}
	return out
}

// checkDashboardData fails for every dashboard selector that selects no
// series of any of the scrapes.
func checkDashboardData(t *testing.T, what string, scrapes ...metricSet) {
	t.Helper()
	var series []labelSet
	for _, m := range scrapes {
		series = append(series, seriesOf(m)...)
	}
	var missing []string
	sels := dashboardSelectors(t)
	for _, s := range sels {
		if !s.matches(series) {
			missing = append(missing, s.text)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("%s: %d of %d dashboard selectors select no series (the panel says No data):\n  %s",
			what, len(missing), len(sels), strings.Join(missing, "\n  "))
	}
}

func TestSelectorExtractor(t *testing.T) {
	sels := parseSelectors(t, `histogram_quantile(0.99, sum by (le) (rate(tailsift_x_seconds_bucket{instance=~"$instance", kind!="a"}[5m]))) / tailsift_y`)
	if len(sels) != 2 || sels[0].name != "tailsift_x_seconds_bucket" || len(sels[0].matchers) != 2 || sels[1].name != "tailsift_y" {
		t.Fatalf("%+v", sels)
	}
	series := []labelSet{{"__name__": "tailsift_x_seconds_bucket", "kind": "a"}, {"__name__": "tailsift_y"}}
	if sels[0].matches(series) || !sels[1].matches(series) {
		t.Error("kind!=\"a\" matched kind=a, or a bare name matched nothing")
	}
	series = append(series, labelSet{"__name__": "tailsift_x_seconds_bucket", "kind": "b"})
	if !sels[0].matches(series) {
		t.Error("kind!=\"a\" did not match kind=b")
	}
}

// TestDashboardHasDataOnADefaultNode starts a node with the default
// configuration and evaluates every selector of the dashboard against its
// /metrics: before any traffic, as an operator opening the dashboard on a
// new node sees it, and after some.
func TestDashboardHasDataOnADefaultNode(t *testing.T) {
	b, client := startBroker(t, 4)
	n, stop := startTestNode(t, b.Addr(), "otlp_spans", t.TempDir(), nil)
	addr := n.httpLn.Addr().String()
	// The per-partition gauges (lag, unsettled records) exist once the
	// node has partitions to show them for: Prometheus would see the same.
	waitFor(t, time.Minute, func() bool {
		return n.consumer.Ready() && scrapeMetrics(t, addr)["tailsift_router_consumer_lag_records"] != nil
	})
	checkDashboardData(t, "a default node before traffic", scrapeMetrics(t, addr))

	truth, err := gen.Produce(context.Background(), client, "otlp_spans", gen.Config{Seed: 5, Traces: 500})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, func() bool {
		return scrapeMetrics(t, addr).sum("tailsift_router_spans_received_total") == float64(truth.Spans)
	})
	checkDashboardData(t, "a default node after traffic", scrapeMetrics(t, addr))
	stop()
}

// TestDashboardHasDataOnAClusterWithABudget starts three node processes
// with a cost cap, as an operator would run them, lets traffic pass, and
// evaluates every selector of the dashboard against each node's /metrics.
func TestDashboardHasDataOnAClusterWithABudget(t *testing.T) {
	b, adm, _, client := startClusterTest(t, 0)
	dir := t.TempDir()
	config := filepath.Join(t.TempDir(), "tailsift.yaml")
	if err := os.WriteFile(config, []byte("budget:\n  spans_per_second: 2000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var procs []*exec.Cmd
	var httpAddrs []string
	join := ""
	for i := range 3 {
		httpAddr, gossip := freeAddr(t), freeAddr(t)
		procs = append(procs, clusterProc(t, b.Addr(), dir, fmt.Sprintf("n%d", i), gossip, join,
			"--config", config, "--http-addr", httpAddr))
		httpAddrs = append(httpAddrs, httpAddr)
		if join == "" {
			join = gossip
			waitFor(t, time.Minute, func() bool { return httpGet(httpAddr+"/healthz") == nil })
		}
	}
	waitGroupStable(t, adm, "cluster", 3, time.Minute)
	if _, err := gen.Produce(context.Background(), client, "otlp_spans", gen.Config{Seed: 9, Traces: 3000}); err != nil {
		t.Fatal(err)
	}
	waitCommitted(t, adm, "cluster", "otlp_spans", 2*time.Minute)
	for i, addr := range httpAddrs {
		m := scrapeMetrics(t, addr)
		if got := m.sum("tailsift_cluster_members"); got != 3 {
			t.Errorf("n%d sees %v members, want 3", i, got)
		}
		if m.sum("tailsift_router_forwarded_spans_total") <= 0 {
			t.Errorf("n%d forwarded no spans", i)
		}
		checkDashboardData(t, fmt.Sprintf("node n%d of three, with a budget, after traffic", i), m)
	}
	stopAll(t, procs...)
}

// httpGet returns an error unless GET http://url answers 200.
func httpGet(url string) error {
	resp, err := http.Get("http://" + url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}
