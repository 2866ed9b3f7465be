package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tailsift/tailsift/router/broker"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// batchCodecs records the compression of every record batch a consumer reads.
type batchCodecs struct {
	mu    sync.Mutex
	seen  map[uint8]int
	total int
}

func (h *batchCodecs) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen[m.CompressionType]++
	h.total += m.NumRecords
}

// TestGenCompression checks that gen writes record batches with the codec
// asked for (Kafka's codes: 0 none, 4 zstd), as a consumer sees them.
func TestGenCompression(t *testing.T) {
	b, err := broker.Start(broker.Config{Addr: "127.0.0.1:0", Topic: "otlp_spans", Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admCl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	if _, err := kadm.NewClient(admCl).CreateTopics(ctx, 2, 1, nil, "spans-none", "spans-zstd"); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		codec string
		code  uint8
	}{{"none", 0}, {"zstd", 4}} {
		topic := "spans-" + tc.codec
		var out, errOut bytes.Buffer
		if err := cmdGen(ctx, []string{"--brokers", b.Addr(), "--topic", topic, "--traces", "40", "--compression", tc.codec}, &out, &errOut); err != nil {
			t.Fatalf("gen --compression %s: %v\n%s", tc.codec, err, errOut.String())
		}
		h := &batchCodecs{seen: map[uint8]int{}}
		cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.ConsumeTopics(topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond), kgo.WithHooks(h))
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		if _, err := fmtSscanMessages(out.String(), &want); err != nil {
			t.Fatalf("gen output %q: %v", out.String(), err)
		}
		for got := 0; got < want; {
			fs := cl.PollFetches(ctx)
			if err := fs.Err0(); err != nil {
				t.Fatalf("case %d: %v", i, err)
			}
			got += fs.NumRecords()
		}
		cl.Close()
		h.mu.Lock()
		if len(h.seen) != 1 || h.seen[tc.code] == 0 {
			t.Errorf("--compression %s: batches by codec %v, want all %d", tc.codec, h.seen, tc.code)
		}
		h.mu.Unlock()
	}
	var errOut bytes.Buffer
	err = cmdGen(ctx, []string{"--brokers", b.Addr(), "--compression", "brotli"}, &bytes.Buffer{}, &errOut)
	if err == nil || !strings.Contains(err.Error(), `--compression: "brotli" is not allowed`) {
		t.Fatalf("--compression brotli: got %v", err)
	}
}

// fmtSscanMessages reads the message count from gen's summary line.
func fmtSscanMessages(out string, n *int) (int, error) {
	_, rest, _ := strings.Cut(out, ") as ")
	return fmt.Sscanf(rest, "%d messages", n)
}
