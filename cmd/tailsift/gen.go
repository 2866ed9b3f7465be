package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/tailsift/tailsift/bench/gen"
	"github.com/twmb/franz-go/pkg/kgo"
)

func cmdGen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gen", stderr)
	brokers := fs.String("brokers", "127.0.0.1:9092", "Kafka bootstrap brokers, `host:port`, comma-separated")
	topic := fs.String("topic", "otlp_spans", "topic to produce to")
	traces := fs.Int("traces", 10_000, "traces to produce")
	seed := fs.Int64("seed", 1, "random seed: the same seed produces the same traces")
	services := fs.Int("services", 8, "distinct services")
	spans := fs.Int("spans-per-trace", 8, "mean spans per trace")
	errShare := fs.Float64("error-share", 0.02, "share of traces with an error span")
	slowShare := fs.Float64("slow-share", 0.02, "share of traces whose root takes 3s or more")
	perMsg := fs.Int("spans-per-message", 50, "spans per Kafka message")
	encoding := fs.String("encoding", "otlp_proto", "message encoding: otlp_proto or otlp_json")
	maxBatch := sizeFlag(fs, "max-batch-bytes", "1MB", "largest record batch to produce (the Collector's kafkaexporter and Kafka brokers default to about 1MB); a message larger than this is an error")
	compression := fs.String("compression", "snappy", "record batch compression: none, gzip, snappy, lz4 or zstd (the Collector's kafkaexporter defaults to none)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *traces < 1:
		return fmt.Errorf("--traces: must be at least 1, got %d", *traces)
	case *errShare < 0 || *errShare > 1:
		return fmt.Errorf("--error-share: must be within [0, 1], got %v", *errShare)
	case *slowShare < 0 || *slowShare > 1:
		return fmt.Errorf("--slow-share: must be within [0, 1], got %v", *slowShare)
	case *encoding != "otlp_proto" && *encoding != "otlp_json":
		return fmt.Errorf("--encoding: %q is not allowed (allowed: otlp_proto, otlp_json)", *encoding)
	}
	codec, ok := compressionCodecs[*compression]
	if !ok {
		return fmt.Errorf("--compression: %q is not allowed (allowed: none, gzip, snappy, lz4, zstd)", *compression)
	}
	batchMax := maxBatch.v
	if batchMax < 1024 || batchMax > 1<<30 {
		return fmt.Errorf("--max-batch-bytes: must be a size from 1KiB to 1GiB, got %q", maxBatch.text)
	}
	// The generator reads a zero share as "default"; here 0 means none.
	for _, share := range []*float64{errShare, slowShare} {
		if *share == 0 {
			*share = -1
		}
	}
	// Batches of Kafka's usual size matter to consumers: a broker fills a
	// fetch response batch by batch, so batches near the response's size
	// let one partition take a whole fetch, and partitions are read
	// unevenly. A record is stamped when it is handed to the client, so
	// the client's buffer is kept to 1,000 records: the default 10,000
	// filled at once at the start and stamped half a million spans with
	// the same moment, a burst no exporter writing live traffic makes.
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(*brokers, ",")...), kgo.ProducerBatchMaxBytes(int32(batchMax)),
		kgo.MaxBufferedRecords(1000), kgo.ProducerBatchCompression(codec))
	if err != nil {
		return err
	}
	defer cl.Close()
	start := time.Now()
	truth, err := gen.Produce(ctx, cl, *topic, gen.Config{
		Seed: *seed, Traces: *traces, Services: *services, SpansPerTrace: *spans,
		ErrorShare: *errShare, SlowShare: *slowShare, SpansPerMessage: *perMsg, Encoding: *encoding,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "produced %d spans in %d traces (%d with errors, %d slow) as %d messages to %s in %.1fs\n",
		truth.Spans, truth.Traces, len(truth.ErrorTraces), len(truth.SlowTraces), truth.Messages, *topic, time.Since(start).Seconds())
	fmt.Fprintln(stdout, "traces by root service:")
	names := make([]string, 0, len(truth.ByService))
	for s := range truth.ByService {
		names = append(names, s)
	}
	sort.Strings(names)
	for _, s := range names {
		fmt.Fprintf(stdout, "  %-12s %d\n", s, truth.ByService[s])
	}
	return nil
}

// compressionCodecs are the record batch compressions gen can produce with.
var compressionCodecs = map[string]kgo.CompressionCodec{
	"none":   kgo.NoCompression(),
	"gzip":   kgo.GzipCompression(),
	"snappy": kgo.SnappyCompression(),
	"lz4":    kgo.Lz4Compression(),
	"zstd":   kgo.ZstdCompression(),
}
