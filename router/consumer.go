package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tailsift/tailsift/internal/otlpwire"
	"github.com/tailsift/tailsift/sampler"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Dispatcher is where the consumer hands spans: the sampler, or a router in
// front of it that forwards spans owned by other nodes. Add may block
// (backpressure) and must not retain items after it returns.
type Dispatcher interface {
	Add(ctx context.Context, items []sampler.Item) error
}

// Config configures the Kafka consumer.
type Config struct {
	Brokers  []string
	Topic    string
	Group    string
	Encoding string // otlp_proto (default) or otlp_json
	// MaxMessageBytes: larger records are skipped and counted as oversized.
	// Default 64 MiB.
	MaxMessageBytes int
	// CommitInterval is how often settled offsets are committed. Default 1s.
	CommitInterval time.Duration
	// MaxUnsettledRecords bounds the records in flight (polled, not yet
	// settled). Past it the consumer stops polling until the pipeline
	// catches up. Default 200,000.
	MaxUnsettledRecords int
	// FetchMaxWait is how long the broker may hold a fetch waiting for data.
	// Default 500ms.
	FetchMaxWait time.Duration
	// SessionTimeout is how long the group waits for a silent member (one
	// killed without leaving) before reassigning its partitions. Default 45s,
	// Kafka's; lower means faster recovery after a crash and more rebalances
	// on a slow network.
	SessionTimeout time.Duration
	// RebalanceTimeout is how long a rebalance waits for every member to
	// rejoin. A member killed while the group rebalances is only dropped
	// after it, and no partition is read meanwhile; it must still cover the
	// time a member takes to finish its poll and commit before rejoining.
	// Default 60s, Kafka clients'.
	RebalanceTimeout time.Duration
	// Full, if set, pauses polling while it returns true: the sampler's
	// buffer is near its memory bound, and Kafka holds what is not yet read
	// better than the heap would. The sampler must make room on its own
	// (it decides its oldest traces early), since paused polling also holds
	// the watermarks still.
	Full func() bool
	// FetchMaxBytes is what one fetch asks a broker for (default 4 MiB),
	// and a quarter of it, at least 256 KiB, what it asks of one
	// partition. Each fetch response is read into a buffer of its own:
	// buffers of a few MiB are reused by the heap as they are freed, while
	// larger ones keep taking fresh memory from the kernel (page faults
	// were a tenth of a node's CPU with 16 MiB fetches). A larger first
	// batch is still returned whole.
	FetchMaxBytes int
	// CheckCRCs verifies the CRC-32C of every fetched record batch. It
	// costs a pass over every byte read (a few percent of a node's CPU);
	// TCP checksums transfers, brokers verify batches as they are
	// produced, and a message corrupted anyway most likely fails the OTLP
	// scan and is counted as malformed; so it is off by default, as in
	// librdkafka (check.crcs).
	CheckCRCs bool
	// DeadLetterTopic, if set, receives a copy of every record skipped as
	// malformed or oversized.
	DeadLetterTopic string
	// Watermarks, if set, is kept up to date by the consumer (see
	// Watermarks); otherwise the consumer keeps its own.
	Watermarks *Watermarks
	// StateDir holds the poison-record guard's state file (see guard); empty
	// disables the guard.
	StateDir string
	// BeforeScan, if set, is called with each record before it is
	// scanned: a seam for tests that make a record crash the node.
	BeforeScan func(*kgo.Record)
	// Settle, if set, makes durable what the pipeline decided so far: it
	// seals the archive's open files, here and on the peers holding spans
	// forwarded from here. While partitions are revoked the consumer calls
	// it until their records are settled (at most RevokeWait), so it
	// commits them before another member reads them again.
	Settle func(ctx context.Context)
	// RevokeWait bounds how long a revoke waits for the records read from
	// the revoked partitions to settle. The group waits for it (within
	// RebalanceTimeout) and this node polls nothing meanwhile; what is not
	// settled by then is read again by the partitions' next reader.
	// Default a third of RebalanceTimeout, at most 20s.
	RevokeWait time.Duration
	// LeaveFirst makes a shutdown leave the group as soon as polling
	// stops (after settling what it can, at most RevokeWait or a quarter
	// of the grace period), rather than once the pipeline drained: in a
	// cluster the other members then read this node's partitions on while
	// it hands its traces over, where a partition nobody reads would hold
	// every decision, and so the hand-over, back.
	LeaveFirst bool
	// ClientOpts are appended to the franz-go options (TLS, SASL, ...).
	ClientOpts []kgo.Opt
	Logger     *slog.Logger
	// Explain, if set, turns a Kafka error into advice for operators
	// (which setting to check); it is logged beside the error and shown
	// by Err.
	Explain func(error) string
}

// Validate fills defaults and checks the configuration.
func (c *Config) Validate() error {
	if c.Encoding == "" {
		c.Encoding = EncodingProto
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 64 << 20
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = time.Second
	}
	if c.FetchMaxBytes == 0 {
		c.FetchMaxBytes = 4 << 20
	}
	if c.MaxUnsettledRecords == 0 {
		c.MaxUnsettledRecords = 200_000
	}
	if c.FetchMaxWait == 0 {
		c.FetchMaxWait = 500 * time.Millisecond
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 45 * time.Second
	}
	if c.RebalanceTimeout == 0 {
		c.RebalanceTimeout = 60 * time.Second
	}
	if c.RevokeWait == 0 {
		c.RevokeWait = min(c.RebalanceTimeout/3, 20*time.Second)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Watermarks == nil {
		c.Watermarks = NewWatermarks()
	}
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("kafka.brokers: at least one broker address (host:port) is required"))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("kafka.topic: required"))
	}
	if c.Group == "" {
		errs = append(errs, errors.New("kafka.group: required"))
	}
	if c.Encoding != EncodingProto && c.Encoding != EncodingJSON {
		errs = append(errs, fmt.Errorf("kafka.encoding: %q is not allowed (allowed: %s, %s)", c.Encoding, EncodingProto, EncodingJSON))
	}
	if c.MaxMessageBytes < 1024 {
		errs = append(errs, fmt.Errorf("kafka.max_message_bytes: must be at least 1024, got %d", c.MaxMessageBytes))
	}
	if c.FetchMaxBytes < 64<<10 || c.FetchMaxBytes > 1<<30 {
		errs = append(errs, fmt.Errorf("kafka.fetch_max_bytes: must be from 64KiB to 1GiB, got %d", c.FetchMaxBytes))
	}
	if c.CommitInterval < 0 {
		errs = append(errs, errors.New("kafka.commit_interval: must be positive"))
	}
	if c.SessionTimeout < 6*time.Second {
		errs = append(errs, fmt.Errorf("kafka.session_timeout: must be at least 6s (brokers refuse less), got %v", c.SessionTimeout))
	}
	if c.RebalanceTimeout < time.Second {
		errs = append(errs, fmt.Errorf("kafka.rebalance_timeout: must be at least 1s, got %v", c.RebalanceTimeout))
	}
	if c.MaxUnsettledRecords < 1 {
		errs = append(errs, errors.New("kafka.max_unsettled_records: must be at least 1"))
	}
	return errors.Join(errs...)
}

// Consumer is the Kafka poll loop.
type Consumer struct {
	cfg     Config
	client  *kgo.Client
	scanner *Scanner
	out     Dispatcher
	track   *tracker
	wm      *Watermarks
	polled  map[int32]readPos // per partition, the last record of this poll
	m       *Metrics
	log     *throttledLog
	walls   *walls
	guard   *guard                                     // nil without Config.StateDir
	alone   bool                                       // the record just scanned is read carefully: hand its spans on alone
	gauged  struct{ records, age, lag map[int32]bool } // partitions each gauge shows; owned by updateGauges

	records  atomic.Int64  // records polled, for progress reports
	stopping atomic.Bool   // the poll loop has ended: revokes wait for nothing
	left     chan struct{} // closed once this node reads no more (see Left)
	reread   rereadLimits
	assigned atomic.Int32 // partitions assigned now
	lastErr  atomic.Pointer[kafkaErr]
}

// kafkaErr is the last error talking to Kafka, and when it happened.
type kafkaErr struct {
	err error
	at  time.Time
}

// NewConsumer creates the franz-go client and joins the group when Run
// starts polling. cfg must have passed Validate.
func NewConsumer(cfg Config, out Dispatcher, m *Metrics) (*Consumer, error) {
	if m == nil {
		m = NewMetrics(nil)
	}
	sc, err := NewScanner(cfg.Encoding)
	if err != nil {
		return nil, err
	}
	c := &Consumer{cfg: cfg, scanner: sc, out: out, track: newTracker(cfg.Topic), wm: cfg.Watermarks, polled: make(map[int32]readPos), m: m,
		left: make(chan struct{}),
		log:  newThrottledLog(cfg.Logger, time.Minute, 10), walls: newWalls(cfg.Encoding)}
	if c.guard, err = newGuard(cfg.StateDir, cfg.Topic, cfg.Group, cfg.Logger); err != nil {
		// A read-only disk is no reason not to consume.
		cfg.Logger.Warn("poison-record guard off: its state file cannot be kept; a record that crashes the node will crash it again",
			"dir", cfg.StateDir, "err", err)
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchMaxWait(cfg.FetchMaxWait),
		kgo.SessionTimeout(cfg.SessionTimeout),
		kgo.RebalanceTimeout(cfg.RebalanceTimeout),
		// Fetch sizes are soft limits: a larger first record is still
		// returned whole, so they bound memory per poll, not message size.
		// Small per-partition fetches keep partitions read together, which
		// keeps the spans of a trace close in time.
		kgo.FetchMaxBytes(int32(cfg.FetchMaxBytes)),
		kgo.FetchMaxPartitionBytes(int32(max(cfg.FetchMaxBytes/4, 256<<10))),
		kgo.BrokerMaxReadBytes(int32(min(max(cfg.MaxMessageBytes+1<<20, 100<<20), 1<<30))),
		kgo.OnPartitionsAssigned(c.onAssigned),
		kgo.OnPartitionsRevoked(c.onRevoked),
		kgo.OnPartitionsLost(c.onLost),
		kgo.ClientID("tailsift"),
	}
	if !cfg.CheckCRCs {
		opts = append(opts, kgo.DisableFetchCRCValidation())
	}
	opts = append(opts, cfg.ClientOpts...)
	c.client, err = kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("router: kafka client: %w", err)
	}
	return c, nil
}

// Records is the number of records polled so far.
func (c *Consumer) Records() int64 { return c.records.Load() }

// Ready reports whether the consumer has partitions, talked to Kafka
// without error in the last 10 seconds, and stopped no partition on a wall
// of bad records (see Stopped).
func (c *Consumer) Ready() bool {
	return c.assigned.Load() > 0 && c.Err() == nil && c.Stopped() == nil
}

// Err returns the last error talking to Kafka (with the operator's advice
// when Config.Explain gives one) if it is less than 10 seconds old.
func (c *Consumer) Err() error {
	if e := c.lastErr.Load(); e != nil && time.Since(e.at) < 10*time.Second {
		return e.err
	}
	return nil
}

// kafkaFailed records and logs (throttled, by key) an error talking to
// Kafka; the client retries.
func (c *Consumer) kafkaFailed(key, msg string, err error, args ...any) {
	if c.cfg.Explain != nil {
		if hint := c.cfg.Explain(err); hint != "" {
			err = fmt.Errorf("%w (%s)", err, hint)
		}
	}
	c.lastErr.Store(&kafkaErr{err: err, at: time.Now()})
	c.log.Warn(key, msg, append(args, "err", err)...)
}

// Left is closed once the consumer reads no more: on shutdown, when
// polling stopped and, with Config.LeaveFirst, the group was left.
func (c *Consumer) Left() <-chan struct{} { return c.left }

// Watermarks is how far in record time each partition has been read: the
// clock the sampler decides by.
func (c *Consumer) Watermarks() *Watermarks { return c.wm }

// Client exposes the franz-go client (for lag queries and tests).
func (c *Consumer) Client() *kgo.Client { return c.client }

func (c *Consumer) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	c.assigned.Add(int32(len(assigned[c.cfg.Topic])))
	c.reread.set(c.wm, assigned[c.cfg.Topic])
	c.wm.assign(assigned[c.cfg.Topic])
	c.cfg.Logger.Info("partitions assigned", "topic", c.cfg.Topic, "partitions", assigned[c.cfg.Topic])
}

// onRevoked settles and commits what was read from the revoked partitions
// before the group hands them to another member; what is still unsettled
// will be re-read there, or not at all if they come back here first (see
// tracker.hold).
func (c *Consumer) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	parts := revoked[c.cfg.Topic]
	c.settleRevoked(ctx, parts)
	c.wm.revoke(parts)
	c.track.advance()
	c.commit(ctx)
	c.track.hold(parts)
	c.resumeForgotten(parts)
	c.assigned.Add(-int32(len(parts)))
	c.cfg.Logger.Info("partitions revoked", "topic", c.cfg.Topic, "partitions", parts)
}

func (c *Consumer) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	parts := lost[c.cfg.Topic]
	c.wm.revoke(parts)
	c.track.hold(parts)
	c.resumeForgotten(parts)
	c.assigned.Add(-int32(len(parts)))
	c.cfg.Logger.Warn("partitions lost", "topic", c.cfg.Topic, "partitions", parts)
}

// Run polls until ctx is done. Then it waits (at most grace) for drained to
// close — the archive has made durable what it was given — commits the
// settled offsets one last time, and leaves the group.
func (c *Consumer) Run(ctx context.Context, drained <-chan struct{}, grace time.Duration) error {
	defer c.client.Close()
	wmCtx, stopWM := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWM()
	go c.wm.refresh(wmCtx, kadm.NewClient(c.client), c.cfg.Topic, c.cfg.Group, 250*time.Millisecond, func(err error) {
		c.kafkaFailed("offsets", "cannot read the topic's end offsets from Kafka; retrying, decisions wait", err)
	})
	var batch []sampler.Item
	lastCommit := time.Now()
	for ctx.Err() == nil {
		if c.waitForRoom(ctx) != nil {
			break
		}
		// Poll for at most a commit interval, so offsets settled while the
		// topic is idle are still committed.
		pctx, cancel := context.WithTimeout(ctx, c.cfg.CommitInterval)
		fetches := c.client.PollRecords(pctx, pollRecords)
		cancel()
		if fetches.IsClientClosed() {
			break
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return
			}
			c.m.fetchErrors.Inc()
			c.kafkaFailed("fetch", "fetch failed; retrying", err, "topic", topic, "partition", p)
		})
		batch = batch[:0]
		now := time.Now().UnixNano()
		var addErr error
		fetches.EachRecord(func(r *kgo.Record) {
			batch = c.scanRecord(r, now, batch)
			if c.alone && len(batch) > 0 && addErr == nil {
				addErr = c.out.Add(ctx, batch)
				clear(batch)
				batch = batch[:0]
			}
		})
		if addErr != nil {
			break // shutting down, as below
		}
		if len(batch) > 0 {
			if err := c.out.Add(ctx, batch); err != nil {
				// Shutting down: spans not handed over stay unsettled.
				break
			}
		}
		// Only now, with the spans handed to their owners, may the
		// watermark move past them.
		for p, pos := range c.polled {
			c.wm.read(p, pos.offset, pos.ts)
		}
		clear(c.polled)
		clear(batch)
		c.client.AllowRebalance()
		if time.Since(lastCommit) >= c.cfg.CommitInterval {
			c.track.advance()
			c.commit(ctx)
			c.updateGauges()
			c.reportWalls()
			c.guardCommitted()
			lastCommit = time.Now()
		}
	}
	c.client.AllowRebalance()
	if c.cfg.LeaveFirst {
		c.leaveFirst(min(c.cfg.RevokeWait, grace/4))
	}
	c.stopping.Store(true)
	close(c.left)

	// Drain: let the archive finish what was decided, then commit it.
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-drained:
	case <-timer.C:
		c.cfg.Logger.Warn("shutdown grace period ended before the archive drained; unsettled spans will be re-read after restart", "grace", grace)
	}
	if c.cfg.DeadLetterTopic != "" {
		// Copies to the dead-letter topic hold their records' offsets back
		// until acknowledged; give them a moment to land.
		fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := c.client.Flush(fctx); err != nil {
			c.cfg.Logger.Warn("dead-letter copies not acknowledged before shutdown; their records will be re-read after restart", "err", err)
		}
		cancel()
	}
	if !c.cfg.LeaveFirst {
		c.track.advance()
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.commit(cctx)
	}
	c.updateGauges()
	c.guardClose()
	return nil
}

// pollRecords is how many records one poll takes. Their spans are handed
// on as one batch of sampler.Items (80 bytes a span, 50 spans a record from
// the Collector's exporter by default), live until the shards have buffered
// them: 1,000 records keep that near 4 MB, where the garbage collector's
// growth allowance doubles whatever is live. Polls are cheap; fetches from
// Kafka are sized apart from them.
const pollRecords = 1000

// waitForRoom blocks while too many records are in flight, or the sampler
// is full.
func (c *Consumer) waitForRoom(ctx context.Context) error {
	for {
		c.track.advance()
		_, n := c.track.unsettled(time.Now().UnixNano())
		full := c.cfg.Full != nil && c.cfg.Full()
		if n < c.cfg.MaxUnsettledRecords && !full {
			return nil
		}
		if full {
			c.m.throttled.WithLabelValues("memory").Inc()
		} else {
			c.m.throttled.WithLabelValues("unsettled").Inc()
		}
		c.commit(ctx)
		// Paused, the poll loop publishes no gauges: the lag grows here.
		c.updateGauges()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// scanRecord registers r with the tracker and appends its spans to batch.
func (c *Consumer) scanRecord(r *kgo.Record, now int64, batch []sampler.Item) []sampler.Item {
	if c.walls.isStopped(r.Partition) {
		return batch // fetched before the pause: left in Kafka, uncommitted
	}
	c.records.Add(1)
	c.m.records.Inc()
	c.m.bytes.Add(float64(len(r.Value)))
	// The record's timestamp is when the producer (or the broker) wrote
	// it: the input clock the sampler decides by. A clock ahead of ours is
	// clamped to ours.
	ts := min(r.Timestamp.UnixNano(), now)
	pp := c.polled[r.Partition]
	c.polled[r.Partition] = readPos{offset: max(pp.offset, r.Offset), ts: max(pp.ts, ts)}
	rec := c.track.track(r.Partition, r.Offset, now)
	if rec == nil {
		return batch // read before its partition left and came back
	}
	rec.Pending.TS = ts
	reread := c.reread.has(r.Partition, r.Timestamp.UnixNano())
	if c.guardSkips(r, &rec.Pending) {
		return batch
	}
	if len(r.Value) > c.cfg.MaxMessageBytes {
		c.m.malformed.WithLabelValues(badOversized).Inc()
		c.log.Warn(badOversized, "skipped oversized message", "partition", r.Partition, "offset", r.Offset,
			"bytes", len(r.Value), "max_message_bytes", c.cfg.MaxMessageBytes)
		c.deadLetter(r, &rec.Pending, badOversized, "larger than kafka.max_message_bytes")
		return batch
	}
	if c.cfg.BeforeScan != nil {
		c.cfg.BeforeScan(r)
	}
	items, err := c.scanner.Scan(r.Value, &rec.Pending)
	if err != nil {
		kind := badProto
		if errors.Is(err, errBadJSON) {
			kind = badJSON
		} else if !errors.Is(err, otlpwire.ErrMalformed) {
			kind = "other"
		}
		c.m.malformed.WithLabelValues(kind).Inc()
		c.log.Warn(kind, "skipped malformed message", "partition", r.Partition, "offset", r.Offset, "err", err)
		c.deadLetter(r, &rec.Pending, kind, err.Error())
		c.noteScan(r, true)
		return batch
	}
	c.noteScan(r, false)
	if n := c.scanner.invalid[0]; n > 0 {
		c.m.invalidSpans.WithLabelValues(badTraceID).Add(float64(n))
	}
	if n := c.scanner.invalid[1]; n > 0 {
		c.m.invalidSpans.WithLabelValues(badSpanID).Add(float64(n))
	}
	for i, n := range c.scanner.skewed {
		if n > 0 {
			c.m.skewedSpans.WithLabelValues(skewKinds[i]).Add(float64(n))
		}
	}
	rec.Add(len(items))
	c.m.spans.Add(float64(len(items)))
	if reread {
		c.m.rereadSpans.Add(float64(len(items)))
	}
	return append(batch, items...)
}

// commit commits the settled offsets not yet committed.
func (c *Consumer) commit(ctx context.Context) {
	offsets := c.track.commitable()
	if offsets != nil {
		c.walls.hold(offsets[c.cfg.Topic], c.track.committedOffset)
	}
	if len(offsets[c.cfg.Topic]) == 0 {
		return
	}
	var commitErr error
	c.client.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			commitErr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if p.ErrorCode != 0 {
					commitErr = fmt.Errorf("partition %d: error code %d", p.Partition, p.ErrorCode)
				}
			}
		}
	})
	if commitErr != nil && ctx.Err() != nil {
		return // shutting down: the final commit follows
	}
	if commitErr != nil {
		c.m.commitErrors.Inc()
		c.log.Warn("commit", "offset commit failed; will retry", "err", commitErr)
		return
	}
	c.m.commits.Inc()
	c.track.committed(offsets)
}

// updateGauges publishes, per partition this node reads, the unsettled
// records and the consumer lag.
func (c *Consumer) updateGauges() {
	per, _ := c.track.unsettled(time.Now().UnixNano())
	records := make(map[int32]float64, len(per))
	age := make(map[int32]float64, len(per))
	for part, u := range per {
		records[part], age[part] = float64(u.records), u.oldest.Seconds()
	}
	lag := map[int32]float64{}
	for part, n := range c.wm.Lag() {
		lag[part] = float64(n)
		// An assigned partition with nothing unsettled shows zeros,
		// not no data.
		if _, ok := records[part]; !ok {
			records[part], age[part] = 0, 0
		}
	}
	setPartitions(c.m.unsettledRecords, &c.gauged.records, records)
	setPartitions(c.m.unsettledAge, &c.gauged.age, age)
	setPartitions(c.m.lag, &c.gauged.lag, lag)
}

// setPartitions shows values on vec, one series per partition, and deletes
// the series of partitions no longer among them (shown remembers which):
// a revoked partition's last value would otherwise stay on /metrics
// forever, and look like records stuck on this node. Unlike a Reset, no
// scrape finds the other partitions missing meanwhile.
func setPartitions(vec *prometheus.GaugeVec, shown *map[int32]bool, values map[int32]float64) {
	if *shown == nil {
		*shown = map[int32]bool{}
	}
	for part := range *shown {
		if _, ok := values[part]; !ok {
			vec.DeleteLabelValues(strconv.Itoa(int(part)))
			delete(*shown, part)
		}
	}
	for part, v := range values {
		vec.WithLabelValues(strconv.Itoa(int(part))).Set(v)
		(*shown)[part] = true
	}
}

// Lag is the total of the consumer lag over the partitions assigned here.
func (c *Consumer) Lag() int64 {
	var n int64
	for _, l := range c.wm.Lag() {
		n += l
	}
	return n
}

// Metrics are the router's Prometheus metrics.
type Metrics struct {
	records          prometheus.Counter
	bytes            prometheus.Counter
	spans            prometheus.Counter
	malformed        *prometheus.CounterVec
	invalidSpans     *prometheus.CounterVec
	fetchErrors      prometheus.Counter
	commits          prometheus.Counter
	commitErrors     prometheus.Counter
	throttled        *prometheus.CounterVec
	skewedSpans      *prometheus.CounterVec
	deadLettered     prometheus.Counter
	deadLetterErrors prometheus.Counter
	rereadSpans      prometheus.Counter
	revokeUnsettled  prometheus.Counter
	unsettledRecords *prometheus.GaugeVec
	unsettledAge     *prometheus.GaugeVec
	lag              *prometheus.GaugeVec
	stopped          *prometheus.GaugeVec
	poison           prometheus.Counter
}

// NewMetrics creates the router metrics and registers them with reg (nil:
// not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_router_records_total", Help: "Kafka records polled."}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_router_received_bytes_total", Help: "Bytes of Kafka record values polled."}),
		spans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_router_spans_received_total", Help: "Valid spans read from Kafka."}),
		malformed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailsift_router_malformed_messages_total", Help: "Kafka records skipped because they could not be read, by kind."},
			[]string{"kind"}),
		invalidSpans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailsift_router_invalid_spans_total", Help: "Spans skipped for an invalid field, by field."},
			[]string{"kind"}),
		fetchErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_router_fetch_errors_total", Help: "Kafka fetch errors (the client retries)."}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_router_offset_commits_total", Help: "Successful offset commits."}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_router_offset_commit_errors_total", Help: "Failed offset commits (retried at the next interval)."}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailsift_router_poll_throttled_total",
			Help: "Times polling paused, by reason: unsettled (kafka.max_unsettled_records reached) or memory (the sampler's buffer near sampler.max_buffered_bytes)."},
			[]string{"reason"}),
		skewedSpans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailsift_router_skewed_spans_total",
			Help: "Spans whose start is over an hour ahead of (future) or 30 days behind (past) this node's clock, or that end before they start (end_before_start). They are kept."},
			[]string{"kind"}),
		deadLettered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_router_dead_lettered_total", Help: "Bad records copied to the dead-letter topic."}),
		deadLetterErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_router_dead_letter_errors_total", Help: "Bad records the dead-letter topic did not take (they are dropped)."}),
		rereadSpans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_router_reread_spans_total",
			Help: "Spans of records that another cluster member had read (by the watermark it reported) before this node was given their partition: records left unsettled by a crash or a revoke. Each may be archived once more; an upper bound on duplicate rows."}),
		revokeUnsettled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_router_revoked_unsettled_records_total",
			Help: "Records still unsettled when their partition moved to another reader (a revoke, or a cluster node leaving the group at shutdown): the next reader reads them again."}),
		unsettledRecords: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tailsift_router_unsettled_records", Help: "Records polled whose spans are not all dropped or durable, by partition."},
			[]string{"partition"}),
		unsettledAge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tailsift_router_unsettled_oldest_age_seconds", Help: "Age of the oldest unsettled record, by partition."},
			[]string{"partition"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tailsift_router_consumer_lag_records",
			Help: "Records between this node's read position and the partition's log end, by assigned partition."},
			[]string{"partition"}),
		stopped: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tailsift_router_stopped_partitions",
			Help: "Partitions this node stopped reading on a wall of unreadable records (their offsets are not committed past it), by reason: looks_like_otlp_json, looks_like_otlp_proto (the other encoding than kafka.encoding) or unreadable."},
			[]string{"reason"}),
		poison: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tailsift_consumer_poison_records_total",
			Help: "Records skipped because the node died twice while reading them (the poison-record guard)."}),
	}
	for _, r := range []string{stopLooksJSON, stopLooksProto, stopUnreadable} {
		m.stopped.WithLabelValues(r)
	}
	// Every kind starts at zero, so dashboards see a flat line, not "no
	// data", until the first bad record.
	for _, k := range []string{badProto, badJSON, badOversized, "other"} {
		m.malformed.WithLabelValues(k)
	}
	for _, k := range []string{badTraceID, badSpanID} {
		m.invalidSpans.WithLabelValues(k)
	}
	for _, r := range []string{"unsettled", "memory"} {
		m.throttled.WithLabelValues(r)
	}
	for _, k := range skewKinds {
		m.skewedSpans.WithLabelValues(k)
	}
	if reg != nil {
		reg.MustRegister(m.records, m.bytes, m.spans, m.malformed, m.invalidSpans, m.fetchErrors,
			m.commits, m.commitErrors, m.throttled, m.skewedSpans, m.deadLettered, m.deadLetterErrors,
			m.rereadSpans, m.revokeUnsettled, m.unsettledRecords, m.unsettledAge, m.lag, m.stopped, m.poison)
	}
	return m
}

// throttledLog logs at most burst lines per key per period, then one line
// saying how many were suppressed. Floods of bad input become counters, not
// log storms.
type throttledLog struct {
	log    *slog.Logger
	period time.Duration
	burst  int
	mu     sync.Mutex
	keys   map[string]*logWindow
}

type logWindow struct {
	start      time.Time
	n          int
	suppressed int
}

func newThrottledLog(l *slog.Logger, period time.Duration, burst int) *throttledLog {
	return &throttledLog{log: l, period: period, burst: burst, keys: make(map[string]*logWindow)}
}

func (t *throttledLog) Warn(key, msg string, args ...any) {
	t.mu.Lock()
	now := time.Now()
	w := t.keys[key]
	if w == nil {
		w = &logWindow{start: now}
		t.keys[key] = w
	}
	if now.Sub(w.start) >= t.period {
		if w.suppressed > 0 {
			t.log.Warn("log lines suppressed", "key", key, "count", w.suppressed, "period", t.period)
		}
		*w = logWindow{start: now}
	}
	w.n++
	ok := w.n <= t.burst
	if !ok {
		w.suppressed++
	}
	t.mu.Unlock()
	if ok {
		t.log.Warn(msg, args...)
	}
}

// deadLetter copies a record the node cannot use to the dead-letter topic,
// when one is configured, with headers saying why and where it came from.
// The record stays unsettled until the copy is acknowledged, so its offset
// is committed only once the copy is safe.
func (c *Consumer) deadLetter(r *kgo.Record, p *sampler.Pending, kind, reason string) {
	if c.cfg.DeadLetterTopic == "" {
		return
	}
	p.Add(1)
	dl := &kgo.Record{Topic: c.cfg.DeadLetterTopic, Key: r.Key, Value: r.Value, Headers: append(slices.Clone(r.Headers),
		kgo.RecordHeader{Key: "tailsift.error.kind", Value: []byte(kind)},
		kgo.RecordHeader{Key: "tailsift.error", Value: []byte(reason)},
		kgo.RecordHeader{Key: "tailsift.source", Value: fmt.Appendf(nil, "%s/%d/%d", r.Topic, r.Partition, r.Offset)})}
	c.client.Produce(context.Background(), dl, func(_ *kgo.Record, err error) {
		if err != nil {
			c.m.deadLetterErrors.Inc()
			c.log.Warn("dead-letter", "copying a bad record to the dead-letter topic failed; it is dropped", "err", err)
		} else {
			c.m.deadLettered.Inc()
		}
		p.Done()
	})
}

// readPos is how far a poll read one partition.
type readPos struct{ offset, ts int64 }

// settleRevoked waits, at most RevokeWait, until every record read from
// parts is settled, asking the pipeline to make its decisions durable
// (Config.Settle) meanwhile. The group's rebalance waits for it; polling is
// blocked, so the watermark stands still and only traces already complete
// by it are decided: records holding spans of the others stay unsettled
// and are read again by the next reader (the archive writes a span met
// twice in one row group once).
func (c *Consumer) settleRevoked(ctx context.Context, parts []int32) {
	if c.stopping.Load() {
		return
	}
	c.settle(ctx, parts, c.cfg.RevokeWait)
}

// settle waits, at most wait, until every record read from parts is
// settled, calling Config.Settle meanwhile.
func (c *Consumer) settle(ctx context.Context, parts []int32, wait time.Duration) {
	if c.cfg.Settle == nil || len(parts) == 0 {
		return
	}
	start := time.Now()
	deadline := start.Add(wait)
	n := 0
	for {
		c.track.advance()
		if n = c.unsettledIn(parts); n == 0 || !time.Now().Before(deadline) || ctx.Err() != nil {
			break
		}
		sctx, cancel := context.WithDeadline(ctx, deadline)
		c.cfg.Settle(sctx)
		cancel()
		c.track.advance()
		if n = c.unsettledIn(parts); n == 0 {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(settlePoll):
		}
	}
	if n > 0 {
		c.m.revokeUnsettled.Add(float64(n))
		c.cfg.Logger.Info("partitions handed over with unsettled records; their next reader reads them again",
			"partitions", parts, "records", n, "waited", time.Since(start).Round(time.Millisecond))
		return
	}
	c.cfg.Logger.Info("partitions settled before being handed over", "partitions", parts, "waited", time.Since(start).Round(time.Millisecond))
}

// leaveFirst settles what was read (at most wait), commits it and leaves
// the group, for Config.LeaveFirst.
func (c *Consumer) leaveFirst(wait time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), wait+10*time.Second)
	defer cancel()
	c.settle(ctx, c.wm.assignedParts(), wait)
	c.stopping.Store(true) // the revoke that leaving makes only commits
	if err := c.client.LeaveGroupContext(ctx); err != nil {
		c.cfg.Logger.Warn("leaving the consumer group", "err", err)
	}
}

// settlePoll is how often settleRevoked looks at the revoked records.
const settlePoll = 100 * time.Millisecond

// unsettledIn is the number of records in flight from parts.
func (c *Consumer) unsettledIn(parts []int32) int {
	per, _ := c.track.unsettled(time.Now().UnixNano())
	n := 0
	for _, p := range parts {
		n += per[p].records
	}
	return n
}

// rereadLimits are, for partitions just assigned here, the record time up
// to which another member had already read them (Watermarks.ReadElsewhere):
// records up to it are read again. Each limit is dropped at the first
// record past it.
type rereadLimits struct {
	mu  sync.Mutex
	any atomic.Bool
	lim map[int32]int64
}

func (r *rereadLimits) set(wm *Watermarks, parts []int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range parts {
		if v := wm.ReadElsewhere(p); v > 0 {
			if r.lim == nil {
				r.lim = make(map[int32]int64)
			}
			r.lim[p] = v
		}
	}
	r.any.Store(len(r.lim) > 0)
}

// has reports whether a record of partition p written at ts was read before.
func (r *rereadLimits) has(p int32, ts int64) bool {
	if !r.any.Load() {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.lim[p]
	if ok && ts > v {
		delete(r.lim, p)
		r.any.Store(len(r.lim) > 0)
	}
	return ok && ts <= v
}
