// Command e2e drains one Kafka backlog of generated OTLP traces with
// tailsift and then with an OpenTelemetry Collector (kafkareceiver ->
// tail_sampling -> nop), one after the other in the same run, and prints
// what each spent: CPU-seconds per million spans, wall time, peak RSS, and
// for tailsift the memory per buffered span and the archive's size per
// span. Machines are noisy and shared; only the ratios of one run, on one
// backlog, are meant to be quoted, and CPU is counted per process, not by
// the wall clock.
//
//	go run ./bench/e2e                      # 260,000 traces, about 2.1M spans, 3 rounds
//	go run ./bench/e2e -traces 20000 -skip-otelcol -rounds 1
//
// Every process is a separate child: `tailsift broker` holds the backlog,
// `tailsift gen` (a fixed seed) produces it, then each sampler reads it from
// the start under a fresh consumer group. Neither the broker nor the
// generator is measured. Before the first drain the backlog is read once by
// a plain consumer here: the broker's first reads of what it has just taken
// in cost it twice what later ones do, and it shares the machine with the
// sampler being measured, so otherwise the first drain (tailsift's) would
// be the only one to compete with that. Each drain's log line gives the
// broker's CPU meanwhile.
//
// Runs, in order, once:
//
//   - tailsift idle and hold: the idle RSS of a node on an empty topic, then
//     a node whose decisions wait past the run so the whole backlog is
//     buffered at once. Peak RSS over the spans buffered then, against the
//     encoded bytes of those spans, is the memory a buffered span costs.
//
// then each round (-rounds, default 3), so that a noisy machine shows as the
// spread of the rounds and the report's table is the round with the median
// ratio:
//
//   - tailsift drain: decisions 3s (Kafka record time) after a trace goes
//     quiet. The run is drained once the group's committed lag is 0, every
//     span was read, nothing is buffered, every trace was decided, and the
//     process has then been idle (under 0.05 cores) for 2s. The CPU charged
//     is the process's utime+stime at the start of that idle window.
//   - otelcol drain: the same backlog, the same policies, decision_wait 3s,
//     drained by the same rule (lag 0, all spans accepted, every trace
//     decided, idle 2s).
//
// So every drain starts right after another process of the benchmark has
// exited. On a virtual machine that matters: memory a process has just
// freed is much cheaper to touch again than memory new to the VM, which the
// host backs at the first touch (and takes back seconds after it is
// freed), and a drain of tailsift touches a few hundred megabytes in
// seconds. With the memory runs after round 1's drain, as before, that
// drain alone started on memory new to the VM. -settle waits before every
// drain instead, so that each starts on memory new to the VM.
//
// Linux only: it reads /proc.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

type options struct {
	traces       int
	seed         int64
	partitions   int
	compression  string
	otelcol      string
	skipOtelcol  bool
	skipHold     bool
	hold         time.Duration
	idleWindow   time.Duration
	idleCores    float64
	settle       time.Duration
	poll         time.Duration
	phaseTimeout time.Duration
	keep         bool
	rounds       int
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("e2e", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.traces, "traces", 260_000, "traces in the backlog (8 spans each on average)")
	fs.Int64Var(&o.seed, "seed", 1, "generator seed: the same seed gives the same backlog")
	fs.IntVar(&o.partitions, "partitions", 8, "partitions of the topic")
	fs.StringVar(&o.compression, "compression", "none", "record batch compression of the backlog (none is the Collector kafkaexporter's default)")
	fs.StringVar(&o.otelcol, "otelcol", "", "Collector binary (default: build or reuse it with bench/e2e/otelcol.sh)")
	fs.BoolVar(&o.skipOtelcol, "skip-otelcol", false, "measure tailsift only")
	fs.BoolVar(&o.skipHold, "skip-hold", false, "skip the hold run (memory per buffered span)")
	fs.DurationVar(&o.hold, "hold", 30*time.Minute, "decision wait of the hold run; must outlast reading the backlog")
	fs.DurationVar(&o.idleWindow, "idle-window", 2*time.Second, "a drained process stays idle this long")
	fs.Float64Var(&o.idleCores, "idle-cores", 0.05, "below this CPU rate (cores) a process is idle")
	fs.DurationVar(&o.settle, "settle", 0, "wait this long before each drain, so that it starts on memory new to the VM rather than memory the process before it has just freed")
	fs.DurationVar(&o.poll, "poll", 250*time.Millisecond, "how often to read /proc and the metrics")
	fs.DurationVar(&o.phaseTimeout, "timeout", 15*time.Minute, "give up on a run after this long")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (logs, configs, archive)")
	fs.IntVar(&o.rounds, "rounds", 3, "drains of the backlog by each sampler, alternated; the report shows the round with the median ratio")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.traces < 1 || o.partitions < 1 || o.rounds < 1 || o.idleWindow <= 0 || o.phaseTimeout <= 0 || o.hold < time.Minute || o.poll <= 0 || o.settle < 0 {
		fmt.Fprintln(stderr, "e2e: -traces, -partitions and -rounds must be positive, -idle-window, -poll and -timeout positive, -hold at least 1m, -settle not negative")
		return 2
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	defer stopAll()
	if err := bench(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "e2e:", err)
		return 1
	}
	return 0
}

func bench(ctx context.Context, o options, stdout, stderr io.Writer) (err error) {
	logf := func(format string, args ...any) {
		fmt.Fprintf(stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
	dir, err := os.MkdirTemp("", "tailsift-e2e-")
	if err != nil {
		return err
	}
	defer func() {
		if o.keep || err != nil {
			logf("work directory kept: %s", dir)
			return
		}
		os.RemoveAll(dir)
	}()

	logf("building tailsift")
	bin := filepath.Join(dir, "tailsift")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/tailsift/tailsift/cmd/tailsift").CombinedOutput(); err != nil {
		return fmt.Errorf("building tailsift: %v\n%s", err, out)
	}
	otelcolBin := o.otelcol
	if otelcolBin == "" && !o.skipOtelcol {
		logf("finding or building the Collector with otelcol.sh (minutes the first time)")
		if otelcolBin, err = buildOtelcol(ctx, stderr); err != nil {
			return err
		}
	}

	const topic, idleTopic = "otlp_spans", "idle"
	brk, addr, err := startBroker(ctx, bin, dir, topic, o.partitions, logf)
	if err != nil {
		return err
	}
	defer brk.stop(10 * time.Second)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, int32(o.partitions), 1, nil, idleTopic); err != nil {
		return fmt.Errorf("creating topic %s: %w", idleTopic, err)
	}

	logf("gen: producing %d traces (seed %d) to %s", o.traces, o.seed, topic)
	start := time.Now()
	bl, err := produce(ctx, bin, dir, addr, topic, o.traces, o.seed, o.compression)
	if err != nil {
		return err
	}
	records, err := topicEnd(ctx, adm, topic)
	if err != nil {
		return err
	}
	if records != int64(bl.messages) {
		return fmt.Errorf("gen reported %d messages but the topic holds %d records", bl.messages, records)
	}
	logf("gen: %d spans in %d traces (%d with errors, %d slow) as %d messages in %.1fs",
		bl.spans, bl.traces, bl.errors, bl.slow, bl.messages, time.Since(start).Seconds())
	// Every measured drain then meets a broker that has served the
	// backlog before (see readAll).
	start = time.Now()
	before, err := brk.cpu()
	if err != nil {
		return err
	}
	if err := readAll(ctx, addr, topic, records); err != nil {
		return fmt.Errorf("reading the backlog once: %w", err)
	}
	after, err := brk.cpu()
	if err != nil {
		return err
	}
	logf("broker: served the backlog once in %.1fs (%.2f CPU-s of the broker's), so that no measured drain is its first",
		time.Since(start).Seconds(), (after - before).Seconds())

	env := &runEnv{dir: dir, topic: topic, adm: adm, bl: bl, o: o, logf: logf, broker: brk}
	ts := tailsiftTarget(bin, addr, o.hold)
	var oc target
	if !o.skipOtelcol {
		oc = otelcolTarget(otelcolBin, addr, o.traces, o.hold)
	}
	var rounds [][]*result
	var hold *holdResult
	// The memory runs come first, so that every drain, tailsift's first
	// included, starts right after another process of the benchmark has
	// exited, as the Collector's always do (see the package comment).
	if !o.skipHold {
		if hold, err = env.holdAll(ctx, ts, idleTopic); err != nil {
			return fmt.Errorf("tailsift hold: %w", err)
		}
	}
	for i := 1; i <= o.rounds; i++ {
		r, err := env.drain(ctx, ts, i)
		if err != nil {
			return fmt.Errorf("tailsift: %w", err)
		}
		round := []*result{r}
		if !o.skipOtelcol {
			r, err := env.drain(ctx, oc, i)
			if err != nil {
				return fmt.Errorf("otelcol: %w", err)
			}
			round = append(round, r)
		}
		rounds = append(rounds, round)
	}
	printReport(stdout, o, bl, rounds, hold)
	return nil
}

// medianRound returns the index of the round with the median ratio of
// tailsift's CPU to the Collector's (with one sampler, the median CPU): of
// an even number, the lower of the middle two.
func medianRound(rounds [][]*result) int {
	key := func(rs []*result) float64 {
		if r, ok := cpuRatio(rs); ok {
			return r
		}
		return rs[0].cpu.Seconds()
	}
	idx := make([]int, len(rounds))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(key(rounds[a]), key(rounds[b])) })
	return idx[(len(idx)-1)/2]
}

// cpuRatio is tailsift's CPU over the Collector's in a round of both.
func cpuRatio(round []*result) (float64, bool) {
	if len(round) != 2 || round[1].cpu <= 0 {
		return 0, false
	}
	return round[0].cpu.Seconds() / round[1].cpu.Seconds(), true
}

// buildOtelcol runs otelcol.sh, which prints the binary's path last.
func buildOtelcol(ctx context.Context, stderr io.Writer) (string, error) {
	mod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(mod)) == "" {
		return "", fmt.Errorf("locating the module root: %v", err)
	}
	script := filepath.Join(filepath.Dir(strings.TrimSpace(string(mod))), "bench", "e2e", "otelcol.sh")
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Stderr = stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w", script, err)
	}
	lines := strings.Fields(string(out))
	if len(lines) == 0 {
		return "", fmt.Errorf("%s printed no binary path", script)
	}
	return lines[len(lines)-1], nil
}

type runEnv struct {
	dir, topic string
	adm        *kadm.Client
	bl         backlog
	o          options
	logf       func(string, ...any)
	broker     *child
}

// result is what one drain of the backlog cost.
type result struct {
	name string

	wall     time.Duration // start to drained (the idle window's start)
	cpu      time.Duration // utime+stime by then
	startCPU time.Duration // utime+stime when its metrics first answered
	exit     usage         // rusage at exit (SIGTERM after drained)
	peakRSS  int64         // VmHWM when drained

	peakBuffered      float64 // spans, sampled every poll; -1 if not exported
	peakBufferedBytes float64 // their encoded bytes at that moment
	decided, kept     float64 // traces; decided -1 if not exported
	receivedBytes     float64 // record value bytes read (tailsift)

	archivedSpans float64 // -1 without an archive
	archiveBytes  int64   // bytes of the archive's files on disk
	archiveFiles  int
}

// holdResult is tailsift's memory with the whole backlog buffered.
type holdResult struct {
	idleRSS       int64   // a node on an empty topic, settled
	peakRSS       int64   // VmHWM once every span is buffered
	spans         float64 // spans buffered then
	encodedBytes  float64 // their encoded bytes
	decidedTraces float64 // traces decided before that: should be 0
	wall          time.Duration
}

// cpuSample is one reading of a process's CPU counters.
type cpuSample struct {
	at  time.Duration // since start
	cpu time.Duration
}

// start starts t reading topic as group and waits until its metrics answer.
func (e *runEnv) start(ctx context.Context, t target, topic, group string, hold bool) (*child, string, time.Time, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", time.Time{}, err
	}
	argv, err := t.argv(e.dir, topic, group, addr, hold)
	if err != nil {
		return nil, "", time.Time{}, err
	}
	e.logf("%s: starting %s", t.name, strings.Join(argv, " "))
	began := time.Now()
	c, err := startChild(t.name, filepath.Join(e.dir, t.name+"-"+group+".log"), argv...)
	if err != nil {
		return nil, "", time.Time{}, err
	}
	url := "http://" + addr + "/metrics"
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := scrape(ctx, url); err == nil {
			return c, url, began, nil
		}
		if gone, why := c.exited(); gone {
			return nil, "", time.Time{}, fmt.Errorf("exited while starting (%v); see %s", why, c.log.Name())
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.stop(5 * time.Second)
			return nil, "", time.Time{}, errors.Join(ctx.Err(), fmt.Errorf("metrics at %s did not answer within 1m", url))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// drain lets t read the whole backlog under a fresh group and measures it
// until it is drained (see the package comment for the rule).
func (e *runEnv) drain(ctx context.Context, t target, round int) (*result, error) {
	group := fmt.Sprintf("%s-drain-%d", t.name, round)
	select {
	case <-time.After(e.o.settle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	brokerBefore, err := e.broker.cpu()
	if err != nil {
		return nil, err
	}
	c, url, began, err := e.start(ctx, t, e.topic, group, false)
	if err != nil {
		return nil, err
	}
	defer c.stop(30 * time.Second)
	r := &result{name: t.name, peakBuffered: -1, decided: -1, archivedSpans: -1}
	if r.startCPU, err = c.cpu(); err != nil {
		return nil, err
	}
	total, traces := float64(e.bl.spans), float64(e.bl.traces)
	deadline := began.Add(e.o.phaseTimeout)
	var hist []cpuSample
	var s samples
	lagZero, lastLag := false, time.Time{}
	logged := false
	for {
		if err := e.alive(ctx, c, deadline, "draining"); err != nil {
			return nil, err
		}
		now := time.Since(began)
		cpu, cerr := c.cpu()
		if s, err = scrape(ctx, url); err != nil || cerr != nil {
			return nil, errors.Join(err, cerr)
		}
		hist = append(hist, cpuSample{now, cpu})
		buffered, bufBytes, hasBuffered := t.buffered(s)
		if hasBuffered && buffered > r.peakBuffered {
			r.peakBuffered, r.peakBufferedBytes = buffered, bufBytes
		}
		in := s.sum(t.spansIn)
		if in >= total && !logged {
			e.logf("%s: read all %d spans after %.1fs, %.2f CPU-s", t.name, e.bl.spans, now.Seconds(), cpu.Seconds())
			logged = true
		}
		if time.Since(lastLag) >= time.Second {
			lastLag = time.Now()
			lag, err := groupLag(ctx, e.adm, e.topic, group)
			lagZero = err == nil && lag == 0
		}
		decided, hasDecided := t.decided(s)
		done := lagZero && in >= total &&
			(!hasBuffered || buffered == 0) && (!hasDecided || decided >= traces)
		window := e.o.idleWindow
		if !hasDecided {
			// Nothing says when the last decision was made: wait out
			// the decision wait on top.
			window += decisionWait
		}
		if done {
			if busyEnd, ok := idleSince(hist, window, e.o.idleCores); ok {
				r.wall, r.cpu = busyEnd.at, busyEnd.cpu
				break
			}
		}
		time.Sleep(e.o.poll)
	}
	if _, r.peakRSS, err = c.memory(); err != nil {
		return nil, err
	}
	if d, ok := t.decided(s); ok {
		r.decided = d
	}
	r.kept = t.kept(s)
	r.receivedBytes = s.sum("tailsift_router_received_bytes_total")
	if n, ok := t.archived(s); ok {
		r.archivedSpans = n
	}
	brokerAfter, err := e.broker.cpu()
	if err != nil {
		return nil, err
	}
	e.logf("%s: round %d drained after %.1fs: %.2f CPU-s, peak RSS %d MiB, %.0f traces decided, %.0f kept; the broker %.2f CPU-s meanwhile",
		t.name, round, r.wall.Seconds(), r.cpu.Seconds(), r.peakRSS>>20, r.decided, r.kept, (brokerAfter - brokerBefore).Seconds())
	c.stop(30 * time.Second)
	r.exit, _ = c.rusage()
	if d := t.archiveDir(e.dir, group); d != "" {
		if r.archiveBytes, r.archiveFiles, err = dirSize(d); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// idleSince reports whether the process used less than idleCores over the
// last window of hist, and if so returns the sample at the window's start:
// when its work ended.
func idleSince(hist []cpuSample, window time.Duration, idleCores float64) (cpuSample, bool) {
	if len(hist) < 2 {
		return cpuSample{}, false
	}
	last := hist[len(hist)-1]
	for i := len(hist) - 2; i >= 0; i-- {
		if last.at-hist[i].at >= window {
			used := (last.cpu - hist[i].cpu).Seconds()
			return hist[i], used < idleCores*(last.at-hist[i].at).Seconds()
		}
	}
	return cpuSample{}, false
}

// holdAll measures memory: the RSS of an idle node on an empty topic, then
// the peak RSS of a node holding the whole backlog undecided.
func (e *runEnv) holdAll(ctx context.Context, t target, idleTopic string) (*holdResult, error) {
	h := &holdResult{}
	c, _, _, err := e.start(ctx, t, idleTopic, t.name+"-idle", true)
	if err != nil {
		return nil, err
	}
	select {
	case <-ctx.Done():
		c.stop(10 * time.Second)
		return nil, ctx.Err()
	case <-time.After(5 * time.Second): // join the group, settle
	}
	h.idleRSS, _, err = c.memory()
	c.stop(10 * time.Second)
	if err != nil {
		return nil, err
	}

	group := t.name + "-hold"
	c, url, began, err := e.start(ctx, t, e.topic, group, true)
	if err != nil {
		return nil, err
	}
	defer c.stop(10 * time.Second)
	total := float64(e.bl.spans)
	deadline := began.Add(min(e.o.phaseTimeout, e.o.hold))
	for {
		if err := e.alive(ctx, c, deadline, "buffering"); err != nil {
			return nil, err
		}
		s, err := scrape(ctx, url)
		if err != nil {
			return nil, err
		}
		buffered, encoded, ok := t.buffered(s)
		if !ok {
			return nil, errors.New("no buffered-spans metric")
		}
		if s.sum(t.spansIn) >= total && buffered >= total {
			h.spans, h.encodedBytes, h.wall = buffered, encoded, time.Since(began)
			h.decidedTraces, _ = t.decided(s)
			if _, h.peakRSS, err = c.memory(); err != nil {
				return nil, err
			}
			e.logf("%s: buffered %.0f spans after %.1fs, peak RSS %d MiB", t.name, buffered, h.wall.Seconds(), h.peakRSS>>20)
			return h, nil
		}
		time.Sleep(e.o.poll)
	}
}

// alive fails when c has exited, ctx is done, or the deadline has passed.
func (e *runEnv) alive(ctx context.Context, c *child, deadline time.Time, doing string) error {
	if gone, why := c.exited(); gone {
		return fmt.Errorf("exited while %s (%v); see %s", doing, why, c.log.Name())
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if time.Now().After(deadline) {
		return fmt.Errorf("still %s at the deadline (-timeout %s); see %s", doing, e.o.phaseTimeout, c.log.Name())
	}
	return nil
}

// dirSize sums the sizes of the regular files under dir.
func dirSize(dir string) (bytes int64, files int, err error) {
	err = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		bytes += info.Size()
		files++
		return nil
	})
	return bytes, files, err
}

func printReport(w io.Writer, o options, bl backlog, rounds [][]*result, h *holdResult) {
	med := medianRound(rounds)
	rs := rounds[med]
	host, _ := os.Hostname()
	fmt.Fprintf(w, "\nbacklog: %d traces (%d with errors, %d slow), %d spans, %d messages; seed %d, %d partitions, compression %s\n",
		bl.traces, bl.errors, bl.slow, bl.spans, bl.messages, o.seed, o.partitions, o.compression)
	fmt.Fprintf(w, "machine: %s, %d CPUs, %s/%s, %s; load average at the end: %s\n",
		host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), loadAvg())
	if o.settle > 0 {
		fmt.Fprintf(w, "each drain started %s after the process before it exited (-settle)\n", o.settle)
	} else {
		fmt.Fprintln(w, "each drain started right after the process before it exited")
	}
	fmt.Fprintln(w)
	mspans := float64(bl.spans) / 1e6
	if len(rounds) > 1 {
		fmt.Fprintf(w, "rounds (each sampler drains the backlog once a round, in turn):\n")
		for i, round := range rounds {
			line := fmt.Sprintf("  round %d:", i+1)
			for _, r := range round {
				line += fmt.Sprintf("  %s %.3f", r.name, r.cpu.Seconds()/mspans)
			}
			if r, ok := cpuRatio(round); ok {
				line += fmt.Sprintf("  CPU-s per million spans, ratio %.3f", r)
			} else {
				line += " CPU-s per million spans"
			}
			if i == med {
				line += "  (median, below)"
			}
			fmt.Fprintln(w, line)
		}
		fmt.Fprintln(w)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := "drain\t"
	for _, r := range rs {
		header += r.name + "\t"
	}
	if len(rs) == 2 {
		header += rs[0].name + "/" + rs[1].name + "\t"
	}
	fmt.Fprintln(tw, header)
	row := func(label string, f func(*result) float64, format string, ratio bool) {
		line := label + "\t"
		var vs []float64
		for _, r := range rs {
			v := f(r)
			vs = append(vs, v)
			if v < 0 {
				line += "n/a\t"
				continue
			}
			line += fmt.Sprintf(format, v) + "\t"
		}
		if len(vs) == 2 {
			if ratio && vs[0] >= 0 && vs[1] > 0 {
				line += fmt.Sprintf("%.3f", vs[0]/vs[1]) + "\t"
			} else {
				line += "\t"
			}
		}
		fmt.Fprintln(tw, line)
	}
	row("CPU-s per million spans", func(r *result) float64 { return r.cpu.Seconds() / mspans }, "%.3f", true)
	row("CPU-s to drained", func(r *result) float64 { return r.cpu.Seconds() }, "%.2f", true)
	row("  of which starting (until metrics answer)", func(r *result) float64 { return r.startCPU.Seconds() }, "%.2f", false)
	row("CPU-s, whole life (rusage at exit)", func(r *result) float64 { return r.exit.cpu.Seconds() }, "%.2f", true)
	row("  of which system time (rusage at exit)", func(r *result) float64 { return r.exit.sys.Seconds() }, "%.2f", false)
	row("page faults (rusage at exit)", func(r *result) float64 { return float64(r.exit.faults) }, "%.0f", false)
	row("wall s, start to drained", func(r *result) float64 { return r.wall.Seconds() }, "%.1f", true)
	row("peak RSS (MiB)", func(r *result) float64 { return float64(r.peakRSS) / (1 << 20) }, "%.0f", true)
	row("peak RSS, rusage at exit (MiB)", func(r *result) float64 { return float64(r.exit.maxRSS) / (1 << 20) }, "%.0f", true)
	row("peak buffered spans", func(r *result) float64 { return r.peakBuffered }, "%.0f", false)
	row("traces decided", func(r *result) float64 { return r.decided }, "%.0f", false)
	row("traces kept", func(r *result) float64 { return r.kept }, "%.0f", false)
	row("spans archived", func(r *result) float64 { return r.archivedSpans }, "%.0f", false)
	row("archive bytes on disk", func(r *result) float64 {
		if r.archivedSpans < 0 {
			return -1
		}
		return float64(r.archiveBytes)
	}, "%.0f", false)
	row("archive bytes per archived span", func(r *result) float64 {
		if r.archivedSpans <= 0 {
			return -1
		}
		return float64(r.archiveBytes) / r.archivedSpans
	}, "%.1f", false)
	tw.Flush()
	if len(rs) > 0 && rs[0].receivedBytes > 0 {
		fmt.Fprintf(w, "\nKafka record bytes per span (resource and scope included): %.1f\n", rs[0].receivedBytes/float64(bl.spans))
	}
	if h != nil {
		fmt.Fprintf(w, "\nhold (tailsift, whole backlog buffered, after %.1fs)\n", h.wall.Seconds())
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "spans buffered\t%.0f\t\n", h.spans)
		fmt.Fprintf(tw, "encoded bytes per buffered span\t%.1f\t\n", h.encodedBytes/h.spans)
		fmt.Fprintf(tw, "peak RSS (MiB)\t%.0f\t\n", float64(h.peakRSS)/(1<<20))
		fmt.Fprintf(tw, "peak RSS per buffered span (bytes)\t%.1f\t\n", float64(h.peakRSS)/h.spans)
		fmt.Fprintf(tw, "  above the encoded size\t%.1f\t\n", (float64(h.peakRSS)-h.encodedBytes)/h.spans)
		fmt.Fprintf(tw, "idle RSS, empty topic (MiB)\t%.0f\t\n", float64(h.idleRSS)/(1<<20))
		fmt.Fprintf(tw, "(peak - idle RSS) per buffered span\t%.1f\t\n", float64(h.peakRSS-h.idleRSS)/h.spans)
		tw.Flush()
		if h.decidedTraces > 0 {
			fmt.Fprintf(w, "note: %.0f traces were decided before the backlog was buffered; raise -hold\n", h.decidedTraces)
		}
	}
}
