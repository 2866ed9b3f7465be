// Command chaos is a bounded fault-injection run of tailsift over at least
// a million generated spans, with every part in its own process: the Kafka
// broker (`tailsift broker` with a data directory), an S3-compatible store
// (versitygw; a local file:// archive when it is not installed), and nodes
// (`tailsift run`). It kills nodes with SIGKILL at random points, stops
// others with SIGTERM, restarts them, and takes the object store away for
// a while, first with one node and then with a cluster of three. At the end
// it checks the archive against the generator's ground truth and prints:
//
//   - kept-trace loss: traces the default policy keeps (every error and slow
//     trace, 5% of the rest by trace ID) that are missing or incomplete —
//     must be 0;
//   - split traces: traces decided in more than one place with one of the
//     decisions made on a piece of the trace, and traces decided again whole
//     (a re-read trace decided a second time: duplicate rows);
//   - the duplicate share (rows beyond one per trace_id, span_id), before
//     and after `tailsift compact`.
//
// Run it from the repository root: go run ./bench/chaos. It exits non-zero
// when a kept trace is lost.
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/tailsift/tailsift/archive"
	"github.com/tailsift/tailsift/bench/gen"
	"github.com/tailsift/tailsift/sampler"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	topic      = "otlp_spans"
	group      = "chaos"
	bucket     = "traces"
	prefix     = "chaos"
	accessKey  = "chaos"
	secretKey  = "chaos-secret"
	partitions = 8
)

func main() {
	spans := flag.Int("spans", 1_000_000, "spans to produce (at least; traces average 8 spans)")
	seed := flag.Uint64("seed", 1, "seed of the traffic and of the fault schedule")
	limit := flag.Duration("timeout", 15*time.Minute, "give up after this long")
	keep := flag.Bool("keep", false, "keep the work directory (archive, logs) for inspection")
	outage := flag.Duration("outage", 25*time.Second, "how long the object store is down")
	rate := flag.Int("rate", 15_000, "spans per second produced while the nodes run")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *limit)
	defer cancel()
	r := &run{rng: rand.New(rand.NewPCG(*seed, *seed^0x5eed)), seed: *seed, outage: *outage, rate: *rate, start: time.Now()}
	err := r.main(ctx, *spans)
	r.cleanup(*keep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
}

type run struct {
	rng    *rand.Rand
	seed   uint64
	outage time.Duration
	rate   int // spans per second
	start  time.Time
	dir    string
	bin    string

	brokerAddr string
	broker     *exec.Cmd
	s3         *s3Server // nil: file:// archive
	archiveURL string

	mu     sync.Mutex
	procs  []*exec.Cmd
	events []string
	counts map[string]int // fault kind -> times
}

func (r *run) logf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	fmt.Printf("[%6.1fs] %s\n", time.Since(r.start).Seconds(), msg)
}

func (r *run) count(kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.counts == nil {
		r.counts = map[string]int{}
	}
	r.counts[kind]++
}

func (r *run) main(ctx context.Context, spans int) error {
	var err error
	if r.dir, err = os.MkdirTemp("", "tailsift-chaos-"); err != nil {
		return err
	}
	r.logf("work directory %s", r.dir)
	r.bin = filepath.Join(r.dir, "tailsift")
	build := exec.CommandContext(ctx, "go", "build", "-o", r.bin, "./cmd/tailsift")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building tailsift (run from the repository root): %w", err)
	}
	if err := r.startBroker(ctx); err != nil {
		return err
	}
	if err := r.startStore(); err != nil {
		return err
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(r.brokerAddr), kgo.DefaultProduceTopic(topic),
		kgo.ProducerBatchMaxBytes(16<<20), kgo.RetryTimeout(2*time.Minute))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	// Spans start three hours ago, so their hour partitions are finished
	// ones that `tailsift compact` may rewrite at the end.
	genStart := time.Now().Add(-3 * time.Hour)
	half := max(spans/16, 1) // traces per phase at 8 spans per trace
	var truths []*gen.Truth
	produce := func(seed int64) <-chan error {
		done := make(chan error, 1)
		go func() {
			t0 := time.Now()
			tr, err := r.produce(ctx, cl, gen.Config{Seed: seed, Traces: half, Start: genStart})
			if err == nil {
				r.mu.Lock()
				truths = append(truths, tr)
				r.mu.Unlock()
				r.logf("produced %d spans in %d traces (%d messages) in %.1fs", tr.Spans, tr.Traces, tr.Messages, time.Since(t0).Seconds())
			}
			done <- err
		}()
		return done
	}

	// Phase 1: one node, killed and restarted while it reads.
	r.logf("phase 1: one node")
	produced := produce(int64(r.seed)*2 + 1)
	single := func() *node { return r.startNode(ctx, "solo", nil) }
	n := single()
	for i := 0; i < 3; i++ {
		r.sleep(ctx, 8*time.Second, 15*time.Second)
		n.kill(r, syscall.SIGKILL)
		n = single()
	}
	r.sleep(ctx, 8*time.Second, 12*time.Second)
	n.kill(r, syscall.SIGTERM)
	n = single()
	if err := <-produced; err != nil {
		return err
	}
	if err := r.waitCommitted(ctx, adm); err != nil {
		return err
	}
	n.waitReady(ctx)
	n.kill(r, syscall.SIGTERM)

	// Phase 2: three nodes in a cluster; one killed, one stopped, the
	// store away for a while.
	r.logf("phase 2: three nodes")
	produced = produce(int64(r.seed)*2 + 2)
	gossip := []string{freeAddr(), freeAddr(), freeAddr()}
	first := true
	member := func(i int) *node {
		var join []string
		if !first {
			for j, g := range gossip {
				if j != i {
					join = append(join, g)
				}
			}
		}
		return r.startNode(ctx, fmt.Sprintf("n%d", i), &clusterArgs{gossip: gossip[i], join: join})
	}
	nodes := []*node{member(0)}
	first = false
	time.Sleep(time.Second)
	nodes = append(nodes, member(1), member(2))
	r.sleep(ctx, 4*time.Second, 8*time.Second)
	victim := 1 + r.rng.IntN(2)
	nodes[victim].kill(r, syscall.SIGKILL)
	nodes[victim] = member(victim)
	var outageDone chan struct{}
	if r.s3 != nil {
		outageDone = make(chan struct{})
		go func() {
			defer close(outageDone)
			r.s3.stop()
			r.count("store outage")
			r.logf("object store stopped for %v", r.outage)
			select {
			case <-time.After(r.outage):
			case <-ctx.Done():
			}
			if err := r.s3.start(); err != nil {
				r.logf("restarting the object store: %v", err)
			}
			r.logf("object store back")
		}()
	}
	r.sleep(ctx, 3*time.Second, 8*time.Second)
	victim = r.rng.IntN(3)
	nodes[victim].kill(r, syscall.SIGKILL)
	nodes[victim] = member(victim)
	r.sleep(ctx, 3*time.Second, 6*time.Second)
	victim = r.rng.IntN(3)
	nodes[victim].kill(r, syscall.SIGTERM)
	nodes[victim] = member(victim)
	if err := <-produced; err != nil {
		return err
	}
	if outageDone != nil {
		<-outageDone
	}
	if err := r.waitCommitted(ctx, adm); err != nil {
		return err
	}
	for _, n := range nodes {
		n.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, n := range nodes {
		if err := n.cmd.Wait(); err != nil {
			r.logf("%s: exit after SIGTERM: %v", n.name, err)
		}
	}
	spooled := r.spoolLeft()

	before, err := r.check(ctx, truths)
	if err != nil {
		return err
	}
	if err := r.compact(ctx); err != nil {
		return err
	}
	after, err := r.check(ctx, truths)
	if err != nil {
		return err
	}
	r.summary(truths, before, after, spooled)
	if before.lost+before.incomplete+after.lost+after.incomplete > 0 {
		return errors.New("kept traces were lost")
	}
	return nil
}

// produce generates cfg's traffic at about r.rate spans per second, so
// faults land while it flows, and waits for every acknowledgement. Keys are
// distinct per record, spreading messages over all partitions as many
// Collectors would.
func (r *run) produce(ctx context.Context, cl *kgo.Client, cfg gen.Config) (*gen.Truth, error) {
	cfg = cfg.WithDefaults()
	var (
		mu    sync.Mutex
		first error
		seq   uint64
	)
	every := time.Duration(float64(time.Second) * float64(cfg.SpansPerMessage) / float64(r.rate))
	next := time.Now()
	truth, err := gen.Generate(cfg, func(msg []byte) error {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		next = next.Add(every)
		seq++
		key := binary.BigEndian.AppendUint64(nil, seq*0x9e3779b97f4a7c15^uint64(cfg.Seed))
		cl.Produce(ctx, &kgo.Record{Topic: topic, Key: key, Value: msg}, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				first = cmp.Or(first, err)
				mu.Unlock()
			}
		})
		return ctx.Err()
	})
	if ferr := cl.Flush(ctx); err == nil {
		err = ferr
	}
	mu.Lock()
	defer mu.Unlock()
	return truth, cmp.Or(err, first)
}

// sleep waits a random time in [lo, hi).
func (r *run) sleep(ctx context.Context, lo, hi time.Duration) {
	d := lo + time.Duration(r.rng.Int64N(int64(hi-lo)))
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitListening(ctx context.Context, addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s not listening after %v: %w", addr, limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logFile opens a log for a process in the work directory.
// clusterKey returns the file of the cluster key the nodes share, writing
// a random one on first use.
func (r *run) clusterKey() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := filepath.Join(r.dir, "cluster.key")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	key := make([]byte, 16)
	crand.Read(key)
	if err := os.WriteFile(p, []byte(hex.EncodeToString(key)), 0o600); err != nil {
		panic(err)
	}
	return p
}

func (r *run) logFile(name string) *os.File {
	f, err := os.OpenFile(filepath.Join(r.dir, name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		panic(err)
	}
	return f
}

func (r *run) startBroker(ctx context.Context) error {
	r.brokerAddr = freeAddr()
	cmd := exec.Command(r.bin, "broker", "--addr", r.brokerAddr, "--topic", topic,
		"--partitions", strconv.Itoa(partitions), "--data-dir", filepath.Join(r.dir, "kafka"))
	log := r.logFile("broker")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return err
	}
	r.broker = cmd
	if err := waitListening(ctx, r.brokerAddr, 30*time.Second); err != nil {
		return err
	}
	r.logf("broker (tailsift broker, data dir) on %s", r.brokerAddr)
	return nil
}

// s3Server is versitygw serving a directory.
type s3Server struct {
	bin, addr, root string
	log             *os.File
	cmd             *exec.Cmd
}

func (s *s3Server) start() error {
	s.cmd = exec.Command(s.bin, "--port", s.addr, "posix", s.root)
	s.cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+accessKey, "ROOT_SECRET_KEY="+secretKey)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		return err
	}
	return waitListening(context.Background(), s.addr, 30*time.Second)
}

func (s *s3Server) stop() {
	if s.cmd != nil && s.cmd.ProcessState == nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
}

func (r *run) startStore() error {
	bin, err := exec.LookPath("versitygw")
	if err != nil {
		if p := filepath.Join(os.Getenv("HOME"), "go", "bin", "versitygw"); fileExists(p) {
			bin, err = p, nil
		}
	}
	if err != nil {
		dir := filepath.Join(r.dir, "archive")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		r.archiveURL = "file://" + dir
		r.logf("versitygw is not installed (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0): "+
			"archiving to %s instead, without a store outage", r.archiveURL)
		return nil
	}
	s := &s3Server{bin: bin, addr: freeAddr(), root: filepath.Join(r.dir, "s3"), log: r.logFile("versitygw")}
	if err := os.MkdirAll(filepath.Join(s.root, bucket), 0o755); err != nil {
		return err
	}
	if err := s.start(); err != nil {
		return err
	}
	r.s3 = s
	r.archiveURL = "s3://" + bucket + "/" + prefix
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": accessKey, "AWS_SECRET_ACCESS_KEY": secretKey,
		"AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"} {
		os.Setenv(k, v)
	}
	r.logf("object store: versitygw on %s, archive %s", s.addr, r.archiveURL)
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func (r *run) s3Args() []string {
	if r.s3 == nil {
		return nil
	}
	return []string{"--s3-endpoint", "http://" + r.s3.addr, "--s3-path-style", "true"}
}

type clusterArgs struct {
	gossip string
	join   []string
}

type node struct {
	name string
	cmd  *exec.Cmd
	http string
}

func (r *run) startNode(ctx context.Context, name string, c *clusterArgs) *node {
	n := &node{name: name, http: freeAddr()}
	args := []string{"run", "--brokers", r.brokerAddr, "--topic", topic, "--group", group, "--node-id", name,
		"--archive", r.archiveURL, "--archive-roll-age", "2s", "--archive-spool-dir", filepath.Join(r.dir, "spool-"+name),
		"--quiet-period", "1s", "--max-wait", "10s", "--http-addr", n.http, "--log-level", "info",
		"--grace-period", "40s", "--kafka-session-timeout", "6s"}
	args = append(args, r.s3Args()...)
	if c != nil {
		args = append(args, "--gossip-addr", c.gossip, "--forward-addr", freeAddr(), "--cluster-secret-key-file", r.clusterKey())
		if len(c.join) > 0 {
			args = append(args, "--join", strings.Join(c.join, ","))
		}
	}
	n.cmd = exec.CommandContext(ctx, r.bin, args...)
	log := r.logFile("node-" + name)
	n.cmd.Stdout, n.cmd.Stderr = log, log
	if err := n.cmd.Start(); err != nil {
		panic(err)
	}
	r.mu.Lock()
	r.procs = append(r.procs, n.cmd)
	r.mu.Unlock()
	r.logf("started node %s (pid %d)", name, n.cmd.Process.Pid)
	return n
}

// kill signals the node and waits for it to exit.
func (n *node) kill(r *run, sig syscall.Signal) {
	records := scrape(n.http, "tailsift_router_records_total")
	n.cmd.Process.Signal(sig)
	err := n.cmd.Wait()
	name := map[syscall.Signal]string{syscall.SIGKILL: "kill -9", syscall.SIGTERM: "SIGTERM"}[sig]
	r.count(name)
	r.logf("%s node %s after it polled %.0f records (exit: %v)", name, n.name, records, err)
}

// waitReady waits (at most 30s) for the node to answer /readyz.
func (n *node) waitReady(ctx context.Context) {
	c := http.Client{Timeout: 2 * time.Second}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(200 * time.Millisecond) {
		if resp, err := c.Get("http://" + n.http + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
	}
}

// scrape reads one metric from a node, or -1.
func scrape(addr, metric string) float64 {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), metric+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// waitCommitted waits until the group has committed every record: every
// span was dropped or is durable.
func (r *run) waitCommitted(ctx context.Context, adm *kadm.Client) error {
	t0 := time.Now()
	var last int64
	for {
		lags, err := adm.Lag(ctx, group)
		if err == nil {
			if gl, ok := lags[group]; ok && gl.FetchErr == nil && gl.DescribeErr == nil && len(gl.Lag[topic]) == partitions {
				last = 0
				for _, pl := range gl.Lag[topic] {
					if pl.Err != nil || pl.Commit.At < 0 {
						last += 1 << 40
					} else {
						last += pl.Lag
					}
				}
				if last == 0 {
					r.logf("group committed every record (waited %.1fs)", time.Since(t0).Seconds())
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the group did not commit everything in time (lag %d): %w", last, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// spoolLeft counts the files left in the nodes' spools after the run.
func (r *run) spoolLeft() int {
	files, _ := filepath.Glob(filepath.Join(r.dir, "spool-*", "dt=*", "hour=*", "*.parquet"))
	return len(files)
}

func (r *run) compact(ctx context.Context) error {
	args := []string{"compact", "--archive", r.archiveURL, "--older-than", "1h", "--target-size", "64MB"}
	if r.s3 != nil {
		args = append(args, "--s3-endpoint", r.endpoint(), "--s3-path-style")
	}
	cmd := exec.CommandContext(ctx, r.bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err := cmd.Run()
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		r.logf("tailsift compact: %s", line)
	}
	if err != nil {
		return fmt.Errorf("tailsift compact: %w", err)
	}
	r.logf("compaction took %.1fs", time.Since(t0).Seconds())
	return nil
}

// keyRow is the part of an archived row the check reads.
type keyRow struct {
	TraceID    string `parquet:"trace_id"`
	SpanID     string `parquet:"span_id"`
	StatusCode string `parquet:"status_code"`
	KeepReason string `parquet:"keep_reason"`
	DecidedAt  int64  `parquet:"decided_at,timestamp(microsecond:utc)"`
	Late       bool   `parquet:"late"`
}

// result is what the archive holds, measured against the truth.
type result struct {
	files, rows, distinct int
	traces                int // archived
	expected, whole       int // kept traces expected; present with every span
	lost, incomplete      int
	unexpected            int      // archived traces the policy would not keep
	split                 int      // traces decided in more than one place, one decision on a piece
	again                 int      // traces decided again, every decision on the whole trace
	onlyPieces            int      // split traces no single decision holds whole
	losses                []string // what the archive holds of each lost or incomplete trace
}

// maxListed bounds how many lost traces the check describes.
const maxListed = 30

func (r *run) check(ctx context.Context, truths []*gen.Truth) (*result, error) {
	st, err := archive.OpenStore(ctx, r.archiveURL, archive.S3Config{Endpoint: r.endpoint(), PathStyle: r.s3 != nil})
	if err != nil {
		return nil, err
	}
	objs, err := st.List(ctx, "")
	if err != nil {
		return nil, err
	}
	type traceRows struct {
		spans   map[string]int
		decided map[int64]map[string]bool // decision (decided_at) -> its spans, late ones included
		onTime  map[int64]bool            // decisions with a span that was not late
		pieces  map[string]int            // "file decided_at reason late" -> spans
		errors  int                       // archived rows with status ERROR
	}
	got := map[[16]byte]*traceRows{}
	res := &result{}
	for _, o := range objs {
		if !strings.HasSuffix(o.Key, ".parquet") {
			continue
		}
		res.files++
		rows, err := readRows(ctx, st, o)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o.Key, err)
		}
		for _, row := range rows {
			id, err := parseID(row.TraceID)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", o.Key, err)
			}
			tr := got[id]
			if tr == nil {
				tr = &traceRows{spans: map[string]int{}, decided: map[int64]map[string]bool{}, onTime: map[int64]bool{}, pieces: map[string]int{}}
				got[id] = tr
			}
			tr.spans[row.SpanID]++
			tr.pieces[fmt.Sprintf("%s decided=%s reason=%s late=%v", path.Base(o.Key),
				time.UnixMicro(row.DecidedAt).UTC().Format("15:04:05.000"), row.KeepReason, row.Late)]++
			if row.StatusCode == "ERROR" {
				tr.errors++
			}
			if tr.decided[row.DecidedAt] == nil {
				tr.decided[row.DecidedAt] = map[string]bool{}
			}
			tr.decided[row.DecidedAt][row.SpanID] = true
			if !row.Late {
				tr.onTime[row.DecidedAt] = true
			}
			res.rows++
		}
	}
	prob, err := sampler.NewProbabilisticPolicy(0.05)
	if err != nil {
		return nil, err
	}
	keepSet := map[[16]byte]bool{}
	for _, truth := range truths {
		for id, n := range truth.SpansByTrace {
			_, isErr := truth.ErrorTraces[id]
			_, isSlow := truth.SlowTraces[id]
			tr := sampler.Trace{ID: id}
			if !isErr && !isSlow && prob.Decide(&tr).Decision != sampler.Keep {
				continue
			}
			keepSet[id] = true
			res.expected++
			g := got[id]
			switch {
			case g == nil:
				res.lost++
			case len(g.spans) != n:
				res.incomplete++
			default:
				res.whole++
				continue
			}
			if len(res.losses) >= maxListed {
				continue
			}
			why := "rate"
			if isErr {
				why = "error"
			} else if isSlow {
				why = "slow"
			}
			desc := fmt.Sprintf("%x (%s): %d spans, archived 0", id, why, n)
			if g != nil {
				desc = fmt.Sprintf("%x (%s): %d spans, archived %d (%d with status ERROR)", id, why, n, len(g.spans), g.errors)
				for _, k := range slices.Sorted(maps.Keys(g.pieces)) {
					desc += fmt.Sprintf("\n    %3d rows in %s", g.pieces[k], k)
				}
			}
			res.losses = append(res.losses, desc)
		}
	}
	res.traces = len(got)
	for id, g := range got {
		res.distinct += len(g.spans)
		if !keepSet[id] {
			res.unexpected++
		}
		// Late spans carry their trace's decided_at; a decision with
		// nothing but late rows is not a decision of its own here.
		decisions, piece, whole := 0, false, false
		for at, spans := range g.decided {
			if !g.onTime[at] {
				continue
			}
			decisions++
			piece = piece || len(spans) < len(g.spans)
			whole = whole || len(spans) == len(g.spans)
		}
		switch {
		case decisions > 1 && piece:
			res.split++
			if !whole {
				res.onlyPieces++
			}
		case decisions > 1:
			res.again++
		}
	}
	return res, nil
}

func (r *run) endpoint() string {
	if r.s3 == nil {
		return ""
	}
	return "http://" + r.s3.addr
}

// readRows reads an object whole (one GET) and decodes the key columns.
func readRows(ctx context.Context, st archive.Store, o archive.Object) ([]keyRow, error) {
	ra, closer, err := st.Open(ctx, o.Key)
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	buf := make([]byte, o.Size)
	if n, err := ra.ReadAt(buf, 0); n != len(buf) {
		return nil, fmt.Errorf("read %d of %d bytes: %w", n, len(buf), err)
	}
	rd := parquet.NewGenericReader[keyRow](bytes.NewReader(buf))
	defer rd.Close()
	rows := make([]keyRow, rd.NumRows())
	n, err := rd.Read(rows)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return rows[:n], nil
}

func parseID(s string) ([16]byte, error) {
	var id [16]byte
	if len(s) != 32 {
		return id, fmt.Errorf("trace ID %q", s)
	}
	for i := 0; i < 16; i++ {
		v, err := strconv.ParseUint(s[2*i:2*i+2], 16, 8)
		if err != nil {
			return id, fmt.Errorf("trace ID %q", s)
		}
		id[i] = byte(v)
	}
	return id, nil
}

func (r *run) summary(truths []*gen.Truth, before, after *result, spooled int) {
	var spans, traces, errs, slow int
	for _, t := range truths {
		spans += t.Spans
		traces += t.Traces
		errs += len(t.ErrorTraces)
		slow += len(t.SlowTraces)
	}
	store := "versitygw (S3)"
	if r.s3 == nil {
		store = "file:// (versitygw not installed)"
	}
	pct := func(a, b int) string { return fmt.Sprintf("%.3f%%", 100*float64(a)/float64(max(b, 1))) }
	dup := func(x *result) string {
		return fmt.Sprintf("%d of %d rows (%s)", x.rows-x.distinct, x.rows, pct(x.rows-x.distinct, x.rows))
	}
	fmt.Println()
	fmt.Println("== tailsift chaos run ==")
	w := func(k, v string) { fmt.Printf("%-38s %s\n", k, v) }
	w("input", fmt.Sprintf("%d spans, %d traces (%d with errors, %d slow)", spans, traces, errs, slow))
	w("archive", store)
	w("faults", fmt.Sprintf("kill -9 x%d, SIGTERM x%d, store outage x%d (%v)", r.counts["kill -9"], r.counts["SIGTERM"], r.counts["store outage"], r.outage))
	w("phases", "1: one node; 2: three-node cluster")
	w("wall time", time.Since(r.start).Round(time.Second).String())
	w("kept traces expected", strconv.Itoa(before.expected))
	w("kept traces present and whole", strconv.Itoa(before.whole))
	w("KEPT-TRACE LOSS (missing + incomplete)", fmt.Sprintf("%d (%d missing, %d incomplete)", before.lost+before.incomplete, before.lost, before.incomplete))
	w("archived traces not kept by policy", strconv.Itoa(before.unexpected))
	w("split traces (decided in pieces)", fmt.Sprintf("%d of %d archived traces (%s)", before.split, before.traces, pct(before.split, before.traces)))
	w("  of them, no decision holds them whole", fmt.Sprintf("%d (the others: a whole decision and a re-read piece)", before.onlyPieces))
	w("traces decided again whole", fmt.Sprintf("%d of %d archived traces (%s)", before.again, before.traces, pct(before.again, before.traces)))
	w("files left in spools", strconv.Itoa(spooled))
	w("duplicates before compaction", fmt.Sprintf("%s, %d files", dup(before), before.files))
	w("duplicates after tailsift compact", fmt.Sprintf("%s, %d files", dup(after), after.files))
	w("kept-trace loss after compaction", strconv.Itoa(after.lost+after.incomplete))
	if len(before.losses) > 0 {
		fmt.Printf("\nlost or incomplete kept traces (at most %d):\n", maxListed)
		for _, l := range before.losses {
			fmt.Println("  " + l)
		}
	}
}

func (r *run) cleanup(keep bool) {
	r.mu.Lock()
	for _, p := range r.procs {
		if p.ProcessState == nil {
			p.Process.Kill()
			p.Wait()
		}
	}
	r.mu.Unlock()
	if r.s3 != nil {
		r.s3.stop()
	}
	if r.broker != nil {
		r.broker.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { r.broker.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			r.broker.Process.Kill()
		}
	}
	if r.dir == "" {
		return
	}
	if keep {
		fmt.Println("work directory kept:", r.dir)
		return
	}
	os.RemoveAll(r.dir)
}
