package broker

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestPartitionsInterleave checks what the broker exists for: a consumer
// with small fetches reading a backlog sees all partitions early, not one
// partition after another.
func TestPartitionsInterleave(t *testing.T) {
	const parts, perPart = 8, 3000
	b, err := Start(Config{Addr: "127.0.0.1:0", Topic: "spans", Partitions: parts})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	prod, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	value := make([]byte, 1000)
	for i := 0; i < perPart; i++ {
		var recs []*kgo.Record
		for p := int32(0); p < parts; p++ {
			recs = append(recs, &kgo.Record{Topic: "spans", Partition: p, Value: value})
		}
		if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	cons, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.ConsumeTopics("spans"), kgo.ConsumerGroup("g"),
		kgo.FetchMaxBytes(64<<10), kgo.FetchMaxPartitionBytes(16<<10), kgo.FetchMaxWait(200*time.Millisecond),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	// Partitions must be read together: at no point may one partition be
	// ahead of another by more than a quarter of the backlog. Draining them
	// one after another puts the first a whole partition ahead.
	seen := make([]int, parts)
	for total := 0; total < parts*perPart; {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d records: %v", total, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			seen[r.Partition]++
			total++
		})
		if lead := slices.Max(seen) - slices.Min(seen); lead > perPart/4 {
			t.Fatalf("after %d of %d records, per-partition counts %v: one partition leads by %d", total, parts*perPart, seen, lead)
		}
	}
}

// TestDataDirSurvivesRestart checks that records and committed offsets
// persist in DataDir.
func TestDataDirSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Addr: "127.0.0.1:0", Topic: "spans", Partitions: 2, DataDir: dir, Retention: time.Hour}
	b, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.DefaultProduceTopic("spans"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < 10; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	cl.Close()
	b.Close()

	b, err = Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cons, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.ConsumeTopics("spans"), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	n := 0
	for n < 10 {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d of 10 records after restart: %v", n, err)
		}
		n += fs.NumRecords()
	}
}

func TestStartRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Addr: "nonsense", Topic: "t"},
		{Addr: "127.0.0.1:0"},
		{Addr: "127.0.0.1:0", Topic: "t", Partitions: -1},
		{Addr: "127.0.0.1:0", Topic: "t", SASL: SASL{Mechanism: "GSSAPI"}},
	} {
		if b, err := Start(cfg); err == nil {
			b.Close()
			t.Errorf("Start(%+v) succeeded", cfg)
		}
	}
}
