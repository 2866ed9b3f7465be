package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/tailsift/tailsift/router/broker"
)

func cmdBroker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("broker", stderr)
	addr := fs.String("addr", "127.0.0.1:9092", "listen address")
	topic := fs.String("topic", "otlp_spans", "topic to create")
	partitions := fs.Int("partitions", 8, "partitions of the topic")
	dataDir := fs.String("data-dir", "", "persist records and offsets here (default: memory only)")
	retention := durationFlag(fs, "retention", "0s", "topic retention.ms (0: unbounded)")
	retentionBytes := sizeFlag(fs, "retention-bytes", "0", "topic retention.bytes per partition, e.g. 2GiB (0: unbounded)")
	maxMsg := sizeFlag(fs, "max-message-bytes", "16MiB", "largest record batch the broker accepts")
	saslMech := fs.String("sasl-mechanism", "", "require SASL: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
	saslUser := fs.String("sasl-user", "", "SASL user")
	saslPass := fs.String("sasl-password", "", "SASL password")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *partitions < 1 {
		return fmt.Errorf("--partitions: must be at least 1, got %d", *partitions)
	}
	rb, mm := retentionBytes.v, maxMsg.v
	if mm <= 0 {
		return fmt.Errorf("--max-message-bytes: must be a positive size, got %q", maxMsg.text)
	}
	b, err := broker.Start(broker.Config{
		Addr: *addr, Topic: *topic, Partitions: int32(*partitions), DataDir: *dataDir,
		Retention: retention.v, RetentionBytes: rb, MaxMessageBytes: int(mm),
		SASL: broker.SASL{Mechanism: strings.ToUpper(*saslMech), User: *saslUser, Password: *saslPass},
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "embedded Kafka broker listening on %s, topic %s with %d partitions; Ctrl-C to stop\n", b.Addr(), *topic, *partitions)
	<-ctx.Done()
	b.Close()
	return nil
}
