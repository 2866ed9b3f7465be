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
		mu    sync.Mutex
		first error
		seq   uint64
	)
	failed := func() error {
		mu.Lock()
		defer mu.Unlock()
		return first
	}
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			if first == nil {
				first = err
			}
			mu.Unlock()
		}
	}
	truth, err := Generate(cfg, func(msg []byte) error {
		if err := failed(); err != nil {
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
		cl.Produce(ctx, &kgo.Record{Topic: topic, Key: key, Value: msg}, promise)
		return nil
	})
	// Flush even after an error: records already handed to the client
	// are still sent, and their failures reported.
	if ferr := cl.Flush(ctx); err == nil {
		err = ferr
	}
	if err == nil {
		err = failed()
	}
	if err != nil {
		return truth, fmt.Errorf("gen: producing to %s: %w", topic, err)
	}
	return truth, nil
}

// ProduceDelivery delivers d into topic through cl in real time: each
// record is handed to the client when the wall clock, counted from the
// call, reaches its Record.At, so its timestamp is the time it was
// produced, as the gateway's exporter stamps it. d.Start is set to the
// call's time. It returns once every record is acknowledged, or with the
// first error.
func ProduceDelivery(ctx context.Context, cl *kgo.Client, topic string, d Delivery) (*Truth, error) {
	var (
		mu    sync.Mutex
		first error
	)
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			if first == nil {
				first = err
			}
			mu.Unlock()
		}
	}
	start := time.Now()
	d.Start = start
	truth, err := Deliver(d, func(rec Record) error {
		mu.Lock()
		err := first
		mu.Unlock()
		if err != nil {
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
		cl.Produce(ctx, &kgo.Record{Topic: topic, Key: rec.Key, Value: rec.Value}, promise)
		return nil
	})
	if ferr := cl.Flush(ctx); err == nil {
		err = ferr
	}
	if err == nil {
		mu.Lock()
		err = first
		mu.Unlock()
	}
	if err != nil {
		return truth, fmt.Errorf("gen: delivering to %s: %w", topic, err)
	}
	return truth, nil
}
