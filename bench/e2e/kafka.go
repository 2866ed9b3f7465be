package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// backlog is what `tailsift gen` reported producing.
type backlog struct {
	spans, traces, errors, slow, messages int
}

var genLine = regexp.MustCompile(`produced (\d+) spans in (\d+) traces \((\d+) with errors, (\d+) slow\) as (\d+) messages`)

// parseGen reads the summary line `tailsift gen` prints.
func parseGen(out []byte) (backlog, error) {
	m := genLine.FindSubmatch(out)
	if m == nil {
		return backlog{}, fmt.Errorf("gen: no summary line in its output: %q", out)
	}
	var n [5]int
	for i := range n {
		v, err := strconv.Atoi(string(m[i+1]))
		if err != nil {
			return backlog{}, fmt.Errorf("gen: %q: %w", m[0], err)
		}
		n[i] = v
	}
	return backlog{spans: n[0], traces: n[1], errors: n[2], slow: n[3], messages: n[4]}, nil
}

// startBroker starts `tailsift broker` on a free loopback port and waits
// until it answers metadata requests with the topic.
func startBroker(ctx context.Context, bin, dir, topic string, partitions int, logf func(string, ...any)) (*child, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	c, err := startChild("broker", filepath.Join(dir, "broker.log"), bin, "broker",
		"--addr", addr, "--topic", topic, "--partitions", strconv.Itoa(partitions), "--max-message-bytes", "64MiB")
	if err != nil {
		return nil, "", err
	}
	logf("broker: pid %d on %s", c.pid(), addr)
	deadline := time.Now().Add(time.Minute)
	for {
		if gone, why := c.exited(); gone {
			return nil, "", fmt.Errorf("broker exited while starting (%v); see %s", why, c.log.Name())
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return c, addr, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.stop(5 * time.Second)
			return nil, "", fmt.Errorf("broker at %s did not accept connections within 1m", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// produce runs `tailsift gen` to completion and returns what it produced.
func produce(ctx context.Context, bin, dir, brokers, topic string, traces int, seed int64, compression string) (backlog, error) {
	logPath := filepath.Join(dir, "gen.log")
	c, err := startChild("gen", logPath, bin, "gen", "--brokers", brokers, "--topic", topic,
		"--traces", strconv.Itoa(traces), "--seed", strconv.FormatInt(seed, 10), "--compression", compression)
	if err != nil {
		return backlog{}, err
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		c.stop(5 * time.Second)
		return backlog{}, ctx.Err()
	}
	out, _ := os.ReadFile(logPath)
	if c.err != nil {
		return backlog{}, fmt.Errorf("gen: %v\n%s", c.err, out)
	}
	return parseGen(out)
}

// readAll reads topic once, from the start of each partition, with a plain
// consumer (no group), until it has read all its records.
// The broker's first reads of a backlog it has just taken in cost it more
// than the later ones (measured: 2.5 CPU-s against 1.1 for the same
// drain), and the broker shares the machine's two cores with the sampler
// being measured; only the first sampler to run would meet that.
func readAll(ctx context.Context, brokers, topic string, records int64) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var n int64
	for n < records {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read %d of %d records: %w", n, records, err)
		}
		for _, e := range fs.Errors() {
			return fmt.Errorf("reading %s/%d: %w", e.Topic, e.Partition, e.Err)
		}
		n += int64(fs.NumRecords())
	}
	return nil
}

// topicEnd is the sum of the topic's log end offsets: its records.
func topicEnd(ctx context.Context, adm *kadm.Client, topic string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, err
	}
	var n int64
	var failed error
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			failed = o.Err
		}
		n += o.Offset
	})
	return n, failed
}

// groupLag is the records of topic past group's committed offsets. It is
// computed here rather than with kadm's Lag so that a partition with no
// commit yet counts as wholly unread.
func groupLag(ctx context.Context, adm *kadm.Client, topic, group string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, err
	}
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return 0, err
	}
	return lagOf(ends, committed, topic)
}

func lagOf(ends kadm.ListedOffsets, committed kadm.OffsetResponses, topic string) (int64, error) {
	var lag int64
	var failed error
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			failed = o.Err
			return
		}
		var at int64
		if c, ok := committed.Lookup(topic, o.Partition); ok && c.Err == nil && c.At > 0 {
			at = c.At
		}
		lag += max(0, o.Offset-at)
	})
	return lag, failed
}

// freeAddr returns a loopback address with a port free right now. The
// child binds it a moment later; a collision fails the start loudly.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
