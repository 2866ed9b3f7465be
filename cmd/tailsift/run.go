package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"gopkg.in/yaml.v3"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/tailsift/tailsift/archive"
	"github.com/tailsift/tailsift/cluster"
	"github.com/tailsift/tailsift/internal/gctune"
	"github.com/tailsift/tailsift/internal/hugepage"
	"github.com/tailsift/tailsift/internal/logthrottle"
	"github.com/tailsift/tailsift/router"
	"github.com/tailsift/tailsift/sampler"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"
)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, configFile, cfg, err := parseRunArgs(args, os.Getenv, stderr)
	if err != nil {
		return err
	}
	n, done, err := newNodeProcess(cfg, stderr)
	if err != nil {
		return err
	}
	defer done()
	if *configFile != "" {
		stop := n.watchPolicy(ctx, *configFile, func() (Config, error) { return loadConfig(fs, *configFile, os.Getenv) })
		defer stop()
	}
	return n.run(ctx)
}

// newNodeProcess builds the node of this process (run, demo) and tunes the
// Go runtime for it (runtime.*): the heap is first given huge pages, while
// it is still small (package hugepage), and the collector a floor under its
// heap goal (package gctune). done restores the collector's setting.
func newNodeProcess(cfg Config, logOut io.Writer) (n *node, done func(), err error) {
	var marked int64
	var hpErr error
	if cfg.Runtime.HugePageHeapBytes > 0 {
		marked, hpErr = hugepage.BackHeap(cfg.Runtime.HugePageHeapBytes)
	}
	if n, err = newNode(cfg, logOut, processNodeOptions...); err != nil {
		return nil, nil, err
	}
	switch {
	case marked > 0:
		n.log.Info("heap backed by huge pages", "bytes", marked)
	case hpErr != nil:
		n.log.Info("heap not backed by huge pages", "reason", hpErr)
	}
	return n, gctune.MinHeap(uint64(cfg.Runtime.GCMinHeapBytes)), nil
}

// parseRunArgs parses run's command line and builds the configuration from
// it, the file it names and env.
func parseRunArgs(args []string, env func(string) string, stderr io.Writer) (fs *flag.FlagSet, configFile *string, cfg Config, err error) {
	fs = newFlagSet("run", stderr)
	configFile = fs.String("config", "", "YAML configuration file (flags and TAILSIFT_* variables override it)")
	registerConfigFlags(fs)
	if err := parseFlags(fs, joinBoolValues(fs, args)); err != nil {
		return nil, nil, cfg, err
	}
	cfg, err = loadConfig(fs, *configFile, env)
	return fs, configFile, cfg, err
}

// watchPolicy reloads the sampling policy from the configuration file on
// SIGHUP, or when the file changes. A bad policy is logged and the one in
// force stays.
func (n *node) watchPolicy(ctx context.Context, file string, load func() (Config, error)) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(ctx)
	modTime := func() time.Time {
		if st, err := os.Stat(file); err == nil {
			return st.ModTime()
		}
		return time.Time{}
	}
	last := modTime()
	go func() {
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			case <-tick.C:
				if m := modTime(); m.Equal(last) {
					continue
				} else {
					last = m
				}
			}
			cfg, err := load()
			var pol sampler.Policy
			if err == nil {
				pol, err = buildPolicy(cfg, n.sampler.DecisionClock())
			}
			if err != nil {
				n.m.reloads.WithLabelValues("rejected").Inc()
				n.log.Error("policy reload rejected; the policy in force stays", "file", file, "err", oneLine(err))
				continue
			}
			n.applyShare(pol)
			n.sampler.SetPolicy(pol)
			n.m.reloads.WithLabelValues("applied").Inc()
			n.log.Info("policy reloaded", "file", file)
		}
	}()
	return func() { signal.Stop(hup); cancel() }
}

// node is one tailsift node: consumer → sampler → archive, plus the HTTP
// endpoints. It is what `run` runs and what `demo` embeds.
type node struct {
	cfg      Config
	log      *slog.Logger
	reg      *prometheus.Registry
	consumer *router.Consumer
	sampler  *sampler.Sampler
	archive  *archive.Writer
	kept     chan *sampler.Kept
	m        nodeMetrics
	cluster  *clusterNode // nil when running alone
	size     atomic.Int32 // cluster members, for the budget's share
	http     *http.Server
	httpLn   net.Listener
}

// applyShare gives a cost cap its share of the cluster's budget.
func (n *node) applyShare(p sampler.Policy) {
	if b, ok := p.(*sampler.Budget); ok {
		b.SetShare(max(1, int(n.size.Load())))
	}
}

// nodeMetrics are the node's own metrics.
type nodeMetrics struct {
	reloads *prometheus.CounterVec
	members prometheus.Gauge // ring members as this node sees them
	share   prometheus.Gauge // fraction of trace IDs this node owns
}

func newNodeMetrics(reg prometheus.Registerer) nodeMetrics {
	m := nodeMetrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tailsift_policy_reloads_total",
			Help: "Policy reloads (SIGHUP or file change) by result: applied or rejected."}, []string{"result"}),
		members: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailsift_cluster_members",
			Help: "Members of the consistent-hash ring as this node sees them (1 for a node running alone)."}),
		share: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailsift_cluster_ownership_share",
			Help: "Fraction of trace IDs this node owns on the ring (1 for a node running alone)."}),
	}
	// A node alone owns every trace; a cluster member updates both on
	// every membership change.
	m.members.Set(1)
	m.share.Set(1)
	for _, r := range []string{"applied", "rejected"} {
		m.reloads.WithLabelValues(r)
	}
	reg.MustRegister(m.reloads, m.members, m.share, buildInfoMetric())
	return m
}

// parts are the component configurations derived from a Config.
type parts struct {
	log     *slog.Logger
	kafka   router.Config
	sampler sampler.Config
	archive archive.Config
	policy  sampler.Policy
}

// validateConfig checks cfg and derives the component configurations. The
// error names every key at fault, on one line.
func validateConfig(cfg Config) (*parts, error) {
	p := &parts{}
	var errs []error
	var err error
	if p.log, err = newLogger(cfg.Log, io.Discard); err != nil {
		errs = append(errs, err)
	}
	if cfg.NodeID == "" {
		errs = append(errs, errors.New("node_id: required (no host name to default to)"))
	}
	if cfg.Log.ProgressInterval < 0 {
		errs = append(errs, fmt.Errorf("log.progress_interval: must be 0 (off) or positive, got %v", cfg.Log.ProgressInterval))
	}
	if cfg.GracePeriod <= 0 {
		errs = append(errs, fmt.Errorf("grace_period: must be positive, got %v", cfg.GracePeriod))
	}
	if cfg.Runtime.HugePageHeapBytes < 0 {
		errs = append(errs, fmt.Errorf("runtime.huge_page_heap_bytes: must be 0 (off) or positive, got %d", cfg.Runtime.HugePageHeapBytes))
	}
	if cfg.Runtime.GCMinHeapBytes < 0 {
		errs = append(errs, fmt.Errorf("runtime.gc_min_heap_bytes: must be 0 (off) or positive, got %d", cfg.Runtime.GCMinHeapBytes))
	}
	errs = append(errs, cfg.Cluster.validate())
	if _, err := readClusterKey(cfg.Cluster.SecretKeyFile); err != nil {
		errs = append(errs, err)
	}
	secOpts, err := kafkaSecurityOpts(cfg.Kafka)
	errs = append(errs, err)
	p.kafka = router.Config{
		Brokers:             cfg.Kafka.Brokers,
		Topic:               cfg.Kafka.Topic,
		Group:               cfg.Kafka.Group,
		Encoding:            cfg.Kafka.Encoding,
		MaxMessageBytes:     cfg.Kafka.MaxMessageBytes,
		FetchMaxBytes:       cfg.Kafka.FetchMaxBytes,
		CommitInterval:      cfg.Kafka.CommitInterval,
		MaxUnsettledRecords: cfg.Kafka.MaxUnsettledRecords,
		SessionTimeout:      cfg.Kafka.SessionTimeout,
		RebalanceTimeout:    cfg.Kafka.RebalanceTimeout,
		DeadLetterTopic:     cfg.Kafka.DeadLetterTopic,
		CheckCRCs:           cfg.Kafka.CheckCRCs,
		ClientOpts:          secOpts,
		Explain:             explainKafkaErr(cfg.Kafka),
		// The poison-record guard's state lives with the node's other
		// local state, the spool.
		StateDir: cmp.Or(cfg.Archive.SpoolDir, filepath.Join(os.TempDir(), "tailsift-spool-"+cfg.NodeID)),
	}
	errs = append(errs, p.kafka.Validate())
	p.sampler = sampler.Config{
		Shards:            cfg.Sampler.Shards,
		QuietPeriod:       cfg.Sampler.QuietPeriod,
		MaxWait:           cfg.Sampler.MaxWait,
		MaxSpansPerTrace:  cfg.Sampler.MaxSpansPerTrace,
		MaxBufferedBytes:  cfg.Sampler.MaxBufferedBytes,
		DecisionCacheSize: cfg.Sampler.DecisionCacheSize,
	}
	// The sampler decides in record time, as far as every partition has
	// been read (see router.Watermarks).
	wm := router.NewWatermarks()
	p.kafka.Watermarks = wm
	p.sampler.InputClock = wm
	errs = append(errs, p.sampler.Validate())
	var redactKey []byte
	if f := cfg.Archive.RedactKeyFile; f != "" {
		if redactKey, err = os.ReadFile(f); err != nil {
			errs = append(errs, fmt.Errorf("archive.redact_key_file: %w", err))
		}
		redactKey = bytes.TrimSpace(redactKey)
	}
	p.archive = archive.Config{
		Redact:    cfg.Archive.Redact,
		RedactKey: redactKey,
		URL:       cfg.Archive.URL,
		RollBytes: cfg.Archive.RollBytes,
		RollAge:   cfg.Archive.RollAge,
		SpoolDir:  cfg.Archive.SpoolDir,
		NodeID:    cfg.NodeID,
		// Spool cap: see archive.Config.SpoolMaxBytes.
		SpoolMaxBytes: cfg.Archive.SpoolMaxBytes,
		S3: archive.S3Config{
			Region:    cfg.Archive.S3.Region,
			Endpoint:  cfg.Archive.S3.Endpoint,
			PathStyle: cfg.Archive.S3.PathStyle,
		},
	}
	errs = append(errs, p.archive.Validate())
	p.policy, err = buildPolicy(cfg, wm)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, oneLine(err)
	}
	return p, nil
}

// nodeOption adjusts how a node is built; for tests.
type nodeOption func(*nodeOptions)

type nodeOptions struct {
	// registerer wraps the registry every metric is registered with.
	registerer func(*prometheus.Registry) prometheus.Registerer
	// beforeScan is router.Config.BeforeScan.
	beforeScan func(*kgo.Record)
}

// processNodeOptions build the node of this process (run, demo): tests of
// the real binary set them before main runs.
var processNodeOptions []nodeOption

// withRegisterer registers the node's metrics through wrap(registry).
func withRegisterer(wrap func(*prometheus.Registry) prometheus.Registerer) nodeOption {
	return func(o *nodeOptions) { o.registerer = wrap }
}

// newNode validates cfg and builds every component, without starting any.
func newNode(cfg Config, logOut io.Writer, opts ...nodeOption) (*node, error) {
	var o nodeOptions
	for _, opt := range opts {
		opt(&o)
	}
	p, err := validateConfig(cfg)
	if err != nil {
		return nil, err
	}
	logger, _ := newLogger(cfg.Log, logOut)
	p.kafka.Logger = logger.With("component", "router")
	p.kafka.BeforeScan = o.beforeScan
	p.archive.Logger = logger.With("component", "archive")
	p.sampler.Logger = logger.With("component", "sampler")

	n := &node{cfg: cfg, log: logger, reg: prometheus.NewRegistry(), kept: make(chan *sampler.Kept, 256)}
	var reg prometheus.Registerer = n.reg
	if o.registerer != nil {
		reg = o.registerer(n.reg)
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	n.m = newNodeMetrics(reg)
	n.sampler = sampler.New(p.sampler, p.policy, n.kept, sampler.NewMetrics(reg), nil)
	n.applyShare(p.policy)
	reg.MustRegister(sampler.NewBudgetCollector(n.sampler.Policy))
	var dispatch router.Dispatcher = n.sampler
	if cfg.Cluster.enabled() {
		if n.cluster, err = newClusterNode(cfg.Cluster, cfg.NodeID, n.sampler, p.kafka.Watermarks, reg, logger); err != nil {
			return nil, err
		}
		// An owner acknowledges forwarded spans once they are decided and
		// durable: within max_wait and a file's roll age, plus a member's
		// session timeout of watermark hold. Twice that, at least a minute.
		n.cluster.route.SetAckTimeout(max(time.Minute,
			2*(p.sampler.MaxWait+cmp.Or(p.archive.RollAge, archive.DefaultRollAge))+p.kafka.SessionTimeout))
		n.cluster.onRing = func(r *cluster.Ring) {
			n.size.Store(int32(len(r.Members())))
			n.m.members.Set(float64(len(r.Members())))
			n.m.share.Set(r.Share())
			n.applyShare(n.sampler.Policy())
		}
		dispatch = n.cluster
		p.kafka.LeaveFirst = true
	}
	if n.cluster == nil {
		// A node alone forwards nothing; its forwarding series are
		// exported at zero all the same, so the cluster panels of the
		// dashboard read "nothing forwarded", not "no data".
		router.NewRouteMetrics(reg)
	}
	p.kafka.Full = n.sampler.Full
	// Before partitions move to another reader, what was decided from them
	// is made durable: here, and on the peers spans were forwarded to.
	p.kafka.Settle = func(ctx context.Context) {
		if n.cluster != nil {
			n.cluster.askSeal()
		}
		n.archive.Seal(ctx)
	}
	if n.consumer, err = router.NewConsumer(p.kafka, dispatch, router.NewMetrics(reg)); err != nil {
		return nil, err
	}
	// Kept traces on their way to the archive, and held there until
	// written, count against the sampler's memory bound.
	p.archive.Pressure = n.sampler.Full
	n.archive, err = archive.New(context.Background(), p.archive, archive.NewMetrics(reg))
	if err != nil {
		return nil, fmt.Errorf("archive.url %s: %w", cfg.Archive.URL, err)
	}
	if n.cluster != nil {
		n.cluster.seal = n.archive.Seal
	}
	if cfg.HTTP.Addr != "" {
		if n.httpLn, err = net.Listen("tcp", cfg.HTTP.Addr); err != nil {
			return nil, fmt.Errorf("http.addr: %w", err)
		}
		n.http = &http.Server{Handler: n.routes(), ReadHeaderTimeout: 10 * time.Second}
	}
	return n, nil
}

// buildPolicy returns the configured policy (policies, head_sampling and
// budget), or the default: every error, every trace slower than 2s, 5% of
// the rest. The dynamic policy and the budget measure time by clock, the
// sampler's completion clock: record time.
func buildPolicy(cfg Config, clock sampler.Clock) (sampler.Policy, error) {
	doc := &yaml.Node{Kind: yaml.MappingNode}
	for _, sec := range []struct {
		key  string
		node *yaml.Node
	}{{"policies", &cfg.Policies}, {"head_sampling", &cfg.HeadSampling}, {"budget", &cfg.Budget}} {
		if sec.node.Kind != 0 {
			doc.Content = append(doc.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: sec.key}, sec.node)
		}
	}
	if len(doc.Content) == 0 {
		return sampler.DefaultPolicy(), nil
	}
	return sampler.ParsePolicyNode(doc, sampler.WithClock(clock))
}

func (n *node) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{Registry: n.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := n.consumer.Err(); err != nil {
			http.Error(w, "not ready: kafka: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if err := n.consumer.Stopped(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if !n.consumer.Ready() {
			http.Error(w, "not ready: no Kafka partitions assigned to this node yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if n.cfg.HTTP.PProf {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// run runs the node until ctx is done, then shuts down in order: stop
// fetching, let the archive make durable what was decided, commit, exit —
// all within the grace period.
func (n *node) run(ctx context.Context) error {
	n.log.Info("tailsift node starting", "node_id", n.cfg.NodeID, "brokers", strings.Join(n.cfg.Kafka.Brokers, ","),
		"topic", n.cfg.Kafka.Topic, "group", n.cfg.Kafka.Group, "archive", n.cfg.Archive.URL, "http_addr", n.cfg.HTTP.Addr, "pprof", n.cfg.HTTP.PProf)
	warnDefaultBrokers(n.cfg, n.log)
	// The archive must outlive ctx: it drains what the sampler decided.
	// It is cancelled only when the grace period runs out.
	archCtx, archCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer archCancel()
	stopGrace := context.AfterFunc(ctx, func() {
		n.log.Info("shutting down", "grace_period", n.cfg.GracePeriod)
		time.AfterFunc(n.cfg.GracePeriod, archCancel)
	})
	defer stopGrace()

	// The sampler stops when ctx ends — in a cluster only once this node
	// has left and handed its buffered traces to the others.
	smpCtx, stopSampler := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSampler()
	// The cluster side (transport, acks) lasts until the archive drained.
	clCtx, stopCluster := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCluster()

	drained := make(chan struct{})
	var g errgroup.Group
	if n.cluster != nil {
		n.cluster.run(clCtx, &g)
		// Joining waits on other nodes; a signal meanwhile ends it.
		if err := n.cluster.join(ctx, clCtx); err != nil {
			stopCluster()
			n.cluster.close()
			g.Wait()
			return err
		}
	}
	stopLeave := context.AfterFunc(ctx, func() {
		if n.cluster != nil {
			// The consumer first leaves the group (kafka.LeaveFirst), so
			// the others read its partitions on while it hands over.
			select {
			case <-n.consumer.Left():
			case <-time.After(n.cfg.GracePeriod / 2):
			}
			lctx, cancel := context.WithTimeout(context.Background(), n.cfg.GracePeriod/2)
			n.cluster.leave(lctx)
			cancel()
		}
		stopSampler()
	})
	defer stopLeave()
	if iv := n.cfg.Log.ProgressInterval; iv > 0 {
		g.Go(func() error { n.logProgress(ctx, iv); return nil })
	}
	g.Go(func() error { return n.consumer.Run(ctx, drained, n.cfg.GracePeriod) })
	if n.cluster != nil {
		n.cluster.sampling.Store(true)
	}
	g.Go(func() error { return n.sampler.Run(smpCtx) })
	g.Go(func() error {
		defer close(drained)
		err := n.archive.Run(archCtx, n.kept)
		if n.cluster != nil {
			stopCluster()
			n.cluster.close()
		}
		return err
	})
	if n.http != nil {
		g.Go(func() error {
			if err := n.http.Serve(n.httpLn); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http: %w", err)
			}
			return nil
		})
		context.AfterFunc(ctx, func() {
			<-drained
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			n.http.Shutdown(sctx)
		})
	}
	err := g.Wait()
	n.log.Info("tailsift node stopped")
	return err
}

func newLogger(c LogConfig, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %q is not allowed (allowed: debug, info, warn, error)", c.Level)
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: durationsAsText}
	// Warnings and errors repeated by retry loops (a peer or a broker
	// down) are written at most ten times a minute per message.
	const floodPeriod, floodBurst = time.Minute, 10
	switch c.Format {
	case "text", "":
		return slog.New(logthrottle.New(slog.NewTextHandler(w, opts), floodPeriod, floodBurst)), nil
	case "json":
		return slog.New(logthrottle.New(slog.NewJSONHandler(w, opts), floodPeriod, floodBurst)), nil
	}
	return nil, fmt.Errorf("log.format: %q is not allowed (allowed: text, json)", c.Format)
}

// oneLine flattens a joined error into one line.
func oneLine(err error) error {
	return errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))
}
