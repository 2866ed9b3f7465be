package gen

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Produce generates cfg's traffic into topic through cl and returns once
// every record is acknowledged, or with the first error.
//
// Each record gets a distinct deterministic 8-byte key (its sequence number
// times an odd constant, so keys differ in every byte), which makes the
// client's default hash partitioner spread the messages over all
// partitions, as many Collectors writing to one topic would.
func Produce(ctx context.Context, cl *kgo.Client, topic string, cfg Config) (*Truth, error) {
	var (
		first firstErr
		seq   uint64
	)
	truth, err := Generate(cfg, func(msg []byte) error {
		if err := first.get(); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		key := make([]byte, 8)
		binary.BigEndian.PutUint64(key, (seq+1)*0x9e3779b97f4a7c15)
		seq++
		// Produce blocks while the client's buffer is full, which paces
		// generation to what the brokers take.
		cl.Produce(ctx, &kgo.Record{Topic: topic, Key: key, Value: msg}, first.promise)
		return nil
	})
	return truth, first.flush(ctx, cl, topic, err)
}

// ProduceDelivery delivers d into topic through cl in real time: each
// record is handed to the client when the wall clock, counted from the
// call, reaches its Record.At, so its timestamp is the time it was
// produced, as the gateway's exporter stamps it. d.Start is set to the
// call's time. It returns once every record is acknowledged, or with the
// first error.
func ProduceDelivery(ctx context.Context, cl *kgo.Client, topic string, d Delivery) (*Truth, error) {
	var first firstErr
	start := time.Now()
	d.Start = start
	truth, err := Deliver(d, func(rec Record) error {
		if err := first.get(); err != nil {
			return err
		}
		if wait := time.Until(rec.At); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
		cl.Produce(ctx, &kgo.Record{Topic: topic, Key: rec.Key, Value: rec.Value}, first.promise)
		return nil
	})
	return truth, first.flush(ctx, cl, topic, err)
}

// firstErr holds the first error of a producer's record promises.
type firstErr struct {
	mu  sync.Mutex
	err error
}

// promise is a kgo produce promise that keeps the first error.
func (f *firstErr) promise(_ *kgo.Record, err error) {
	if err != nil {
		f.mu.Lock()
		if f.err == nil {
			f.err = err
		}
		f.mu.Unlock()
	}
}

func (f *firstErr) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// flush waits for the records handed to cl and returns err, or else the
// first error of their promises. It flushes even after an error: records
// already handed to the client are still sent, and their failures
// reported.
func (f *firstErr) flush(ctx context.Context, cl *kgo.Client, topic string, err error) error {
	if ferr := cl.Flush(ctx); err == nil {
		err = ferr
	}
	if err == nil {
		err = f.get()
	}
	if err != nil {
		return fmt.Errorf("gen: producing to %s: %w", topic, err)
	}
	return nil
}
