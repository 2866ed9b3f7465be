package router

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tailsift/tailsift/router/broker"
)

// TestReadinessFollowsKafka stops the broker under a running consumer and
// starts it again on the same port and data directory: readiness goes
// false while Kafka is unreachable and comes back by itself.
func TestReadinessFollowsKafka(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the client to notice an outage")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	data := t.TempDir()
	bcfg := broker.Config{Addr: addr, Topic: "spans", Partitions: 2, DataDir: data}
	b, err := broker.Start(bcfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Brokers: []string{addr}, Topic: "spans", Group: "g", CommitInterval: 200 * time.Millisecond,
		FetchMaxWait: 200 * time.Millisecond, SessionTimeout: 6 * time.Second}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c, err := NewConsumer(cfg, nopDispatcher{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	drained := make(chan struct{})
	close(drained)
	wg.Go(func() { c.Run(ctx, drained, time.Second) })
	defer func() { cancel(); wg.Wait() }()

	waitReady := func(want bool, what string) {
		t.Helper()
		deadline := time.Now().Add(45 * time.Second)
		for c.Ready() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: Ready() stayed %v for 45s", what, !want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitReady(true, "broker up")
	t0 := time.Now()
	b.Close()
	waitReady(false, "broker stopped")
	t.Logf("not ready %.1fs after the broker stopped", time.Since(t0).Seconds())
	b, err = broker.Start(bcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	t0 = time.Now()
	waitReady(true, "broker back")
	t.Logf("ready again %.1fs after the broker came back", time.Since(t0).Seconds())
}
