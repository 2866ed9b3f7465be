package router

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tailsift/tailsift/router/broker"
	"github.com/tailsift/tailsift/sampler"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// startBroker starts an embedded broker with topic and a producer that
// writes to the partition each record names; both close with the test.
func startBroker(t *testing.T, topic string, parts int32) (*broker.Broker, *kgo.Client) {
	t.Helper()
	b, err := broker.Start(broker.Config{Addr: "127.0.0.1:0", Topic: topic, Partitions: parts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	prod, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	return b, prod
}

// holder is a Dispatcher whose spans wait, as spans wait for their trace's
// quiet period: it keeps them all unsettled, so nothing is committed, and
// counts how often each span arrives.
type holder struct {
	mu    sync.Mutex
	seen  map[string]int
	dups  int
	total int
}

func (h *holder) Add(_ context.Context, items []sampler.Item) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, it := range items {
		k := string(it.Span.Raw)
		h.seen[k]++
		if h.seen[k] > 1 {
			h.dups++
		}
		h.total++
	}
	return nil
}

func (h *holder) counts() (total, distinct, dups int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.total, len(h.seen), h.dups
}

// TestPartitionsBackNotReread checks that partitions which leave a node
// and come back to it before anyone commits past them are not read again:
// the node still holds their spans, unsettled, and a second copy would be
// counted and archived twice. They leave in a rebalance (a second member
// joins, takes some, and leaves without reading or committing), or all at
// once when the broker forgets the node's session.
func TestPartitionsBackNotReread(t *testing.T) {
	t.Run("rebalance", func(t *testing.T) { testPartitionsBack(t, false) })
	t.Run("lost session", func(t *testing.T) { testPartitionsBack(t, true) })
}

func testPartitionsBack(t *testing.T, lose bool) {
	const topic, parts, perPart = "spans", 4, 50
	b, prod := startBroker(t, topic, parts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	now := uint64(time.Now().UnixNano())
	n := 0
	produce := func(count int) {
		t.Helper()
		var recs []*kgo.Record
		for p := int32(0); p < parts; p++ {
			for i := 0; i < count; i++ {
				n++
				id := []byte{byte(n >> 8), byte(n), 1, 2, 3, 4, 5, 6}
				span := rawSpan{traceID: append(id[:8:8], id...), spanID: id, start: now, end: now + 1}
				recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Value: message(span)})
			}
		}
		if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	produce(perPart)

	h := &holder{seen: map[string]int{}}
	cfg := Config{Brokers: []string{b.Addr()}, Topic: topic, Group: "g", CommitInterval: 200 * time.Millisecond,
		FetchMaxWait: 200 * time.Millisecond, SessionTimeout: 6 * time.Second, RebalanceTimeout: 10 * time.Second}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(nil)
	c, err := NewConsumer(cfg, h, m)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(runCtx, nil, 0)
	}()
	defer func() { stop(); <-done }()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if ctx.Err() != nil {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("the first records", func() bool { _, distinct, _ := h.counts(); return distinct == n })

	if lose {
		// The next heartbeat is answered as from a member the group does
		// not know: the client drops its partitions and joins again.
		b.Cluster().ControlKey(int16(kmsg.Heartbeat), func(req kmsg.Request) (kmsg.Response, error, bool) {
			resp := req.(*kmsg.HeartbeatRequest).ResponseKind().(*kmsg.HeartbeatResponse)
			resp.ErrorCode = kerr.UnknownMemberID.Code
			return resp, nil, true
		})
		waitFor("the node to lose its partitions", func() bool { return c.assigned.Load() < parts })
	} else {
		takeAndLeave(ctx, t, b.Addr(), topic)
		waitFor("the node to give partitions up", func() bool { return c.assigned.Load() < parts })
	}
	waitFor("the partitions to come back", func() bool { return c.assigned.Load() == parts })

	// Records written now are read after any re-read of the earlier ones.
	produce(1)
	waitFor("the last records", func() bool { _, distinct, _ := h.counts(); return distinct == n })
	total, _, dups := h.counts()
	if dups != 0 || total != n {
		t.Errorf("spans handed over: %d for %d produced, %d of them again", total, n, dups)
	}
	if got := testutil.ToFloat64(m.spans); got != float64(n) {
		t.Errorf("spans received: %v, want %d", got, n)
	}
}

// takeAndLeave joins the group as a second member, waits until it has
// partitions of topic, and leaves without reading or committing.
func takeAndLeave(ctx context.Context, t *testing.T, addr, topic string) {
	t.Helper()
	took := make(chan struct{}, 1)
	other, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumerGroup("g"), kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(), kgo.SessionTimeout(6*time.Second), kgo.RebalanceTimeout(10*time.Second),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
			if len(a[topic]) > 0 {
				select {
				case took <- struct{}{}:
				default:
				}
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	go func() {
		for ctx.Err() == nil && !other.PollFetches(ctx).IsClientClosed() {
		}
	}()
	select {
	case <-took:
	case <-ctx.Done():
		t.Fatal("the second member got no partitions")
	}
}
