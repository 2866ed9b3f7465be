package router

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tailsift/tailsift/router/broker"
	"github.com/tailsift/tailsift/sampler"
	"github.com/twmb/franz-go/pkg/kgo"
)

// settleAll is a Dispatcher that settles every span at once.
type settleAll struct{ spans atomic.Int64 }

func (d *settleAll) Add(_ context.Context, items []sampler.Item) error {
	for i := range items {
		items[i].Span.Src.Done()
	}
	d.spans.Add(int64(len(items)))
	return nil
}

// TestConsumerLagWhileThrottled checks that the lag gauge goes on showing
// the records waiting in Kafka while the memory bound pauses polling, when
// the lag matters most.
func TestConsumerLagWhileThrottled(t *testing.T) {
	const topic = "spans"
	b, err := broker.Start(broker.Config{Addr: "127.0.0.1:0", Topic: topic, Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	prod, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	now := uint64(time.Now().UnixNano())
	produce := func(n int) {
		t.Helper()
		var recs []*kgo.Record
		for i := range n {
			id := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, byte(i)}
			recs = append(recs, &kgo.Record{Value: message(rawSpan{traceID: id, spanID: id[:8], start: now, end: now + 1})})
		}
		if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	var full atomic.Bool
	d := &settleAll{}
	cfg := Config{Brokers: []string{b.Addr()}, Topic: topic, Group: "g", CommitInterval: 100 * time.Millisecond,
		FetchMaxWait: 100 * time.Millisecond, SessionTimeout: 6 * time.Second, Full: full.Load}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(nil)
	c, err := NewConsumer(cfg, d, m)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	drained := make(chan struct{})
	close(drained)
	wg.Go(func() { c.Run(runCtx, drained, time.Second) })
	defer func() { stop(); wg.Wait() }()

	produce(10)
	waitUntil(t, ctx, "the first records read", func() bool { return d.spans.Load() == 10 })
	full.Store(true)
	throttled := func() float64 { return testutil.ToFloat64(m.throttled.WithLabelValues("memory")) }
	waitUntil(t, ctx, "polling paused", func() bool { return throttled() > 0 })
	produce(25)
	waitUntil(t, ctx, "a lag of 25 records shown while paused", func() bool {
		return testutil.ToFloat64(m.lag.WithLabelValues("0")) == 25
	})
	if got := d.spans.Load(); got != 10 {
		t.Errorf("%d spans read while paused, want 10", got)
	}
}

// waitUntil polls cond until it holds or ctx ends.
func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within the test's deadline", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
