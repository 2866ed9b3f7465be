package main

import (
	"context"
	"math"
	"time"
)

// progress is one summary of what a node is doing, for people: rates over
// the last interval and the state now.
type progress struct {
	spansIn, spansKept float64 // counter values at the last report
	at                 time.Time
}

// logProgress logs a one-line summary every interval until ctx is done:
// spans read and kept per second, traces buffered, and the consumer lag.
func (n *node) logProgress(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	p := progress{at: time.Now()}
	p.spansIn, p.spansKept = n.spanCounters()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			in, kept := n.spanCounters()
			secs := now.Sub(p.at).Seconds()
			n.log.Info("progress",
				"spans_in_per_s", math.Round((in-p.spansIn)/secs),
				"kept_spans_per_s", math.Round((kept-p.spansKept)/secs),
				"buffered_traces", gauge(n.reg, "tailsift_sampler_buffered_traces"),
				"lag_records", n.consumer.Lag(),
				"ready", n.consumer.Ready())
			p = progress{spansIn: in, spansKept: kept, at: now}
		}
	}
}

// spanCounters returns the spans read from Kafka and sent to the archive.
func (n *node) spanCounters() (in, kept float64) {
	return sumCounter(n.reg, "tailsift_router_spans_received_total", "", ""),
		sumCounter(n.reg, "tailsift_sampler_spans_kept_total", "", "")
}
