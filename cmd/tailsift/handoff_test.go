package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tailsift/tailsift/router"
)

// TestHandoffLargerThanMaxBatchBytes runs a node that buffers 400 traces,
// then starts a second one joining it, with cluster.max_batch_bytes at
// 16KiB: the first node's hand-off of the traces the second now owns is
// several times the limit. It is split, and every span of every trace is
// archived by one node or the other.
func TestHandoffLargerThanMaxBatchBytes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a two-node cluster")
	}
	const topic, records, maxBatch = "otlp_spans", 400, 16 << 10
	b, client := startBroker(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	produceValues(ctx, t, client, topic, collectorRecords(t, router.EncodingProto, "handoff", records))
	dir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "cluster.key")
	if err := os.WriteFile(keyFile, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	gossipA := freeAddr(t)
	member := func(id, gossip, join string) func(*Config) {
		return func(c *Config) {
			c.NodeID = id
			c.Cluster.GossipAddr = gossip
			c.Cluster.ForwardAddr = freeAddr(t)
			if join != "" {
				c.Cluster.Join = []string{join}
			}
			c.Cluster.MaxBatchBytes = maxBatch
			c.Cluster.SecretKeyFile = keyFile
			// Traces stay buffered until the test flushes them.
			c.Sampler.QuietPeriod = 5 * time.Minute
			c.Sampler.MaxWait = 10 * time.Minute
			c.Archive.RollAge = time.Second
			c.Kafka.SessionTimeout = 6 * time.Second
			c.Kafka.RebalanceTimeout = 10 * time.Second
		}
	}
	a, stopA := startTestNode(t, b.Addr(), topic, dir, member("a", gossipA, ""))
	waitRecords(t, a, records)
	for gauge(a.reg, "tailsift_sampler_buffered_traces") < records {
		if ctx.Err() != nil {
			t.Fatalf("node a buffers %v traces, want %d", gauge(a.reg, "tailsift_sampler_buffered_traces"), records)
		}
		time.Sleep(50 * time.Millisecond)
	}
	bn, stopB := startTestNode(t, b.Addr(), topic, dir, member("b", freeAddr(t), gossipA))

	// The hand-off went out in batches within the limit, and b took them.
	for sumCounter(bn.reg, "tailsift_router_peer_spans_received_total", "", "") == 0 ||
		a.cluster.route.InFlight() > 0 || a.sampler.AsideSpans() > 0 {
		if ctx.Err() != nil {
			t.Fatalf("hand-off incomplete: b received %v spans; a has %d batches unacknowledged, %d spans set aside",
				sumCounter(bn.reg, "tailsift_router_peer_spans_received_total", "", ""), a.cluster.route.InFlight(), a.sampler.AsideSpans())
		}
		// b acknowledges what it archived: decide what it holds.
		if err := bn.sampler.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	forwarded := sumCounter(a.reg, "tailsift_router_forwarded_bytes_total", "", "")
	batches := sumCounter(a.reg, "tailsift_router_forwarded_batches_total", "", "")
	t.Logf("a forwarded %v bytes in %v batches (limit %d)", forwarded, batches, maxBatch)
	if forwarded <= maxBatch || batches < forwarded/maxBatch {
		t.Errorf("a forwarded %v bytes in %v batches: the hand-off should exceed the limit %d and be split", forwarded, batches, maxBatch)
	}
	for _, n := range []*node{a, bn} {
		if err := n.sampler.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	stopB()
	stopA()
	got := archivedSpansByTrace(t, dir)
	spans := 0
	for _, c := range got {
		spans += c
	}
	if len(got) != records || spans < 3*records {
		t.Fatalf("archived %d traces, %d spans; want %d, %d", len(got), spans, records, 3*records)
	}
}
