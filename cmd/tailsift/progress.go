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
// spans read and kept per second, traces buffered, the consumer lag, and
// what waits for the archive: records read but not yet durable and the
// files holding them. Kept spans become durable only when their file
// closes, so after Kafka drains a node can show no lag and nothing
// buffered for up to archive.roll_age before anything appears on disk;
// the first such report says so.
func (n *node) logProgress(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	p := progress{at: time.Now()}
	p.spansIn, p.spansKept = n.spanCounters()
	explained := false
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			in, kept := n.spanCounters()
			secs := now.Sub(p.at).Seconds()
			lag := n.consumer.Lag()
			buffered := gauge(n.reg, "tailsift_sampler_buffered_traces")
			unsettled := gauge(n.reg, "tailsift_router_unsettled_records")
			oldest := time.Duration(maxGauge(n.reg, "tailsift_router_unsettled_oldest_age_seconds") * float64(time.Second))
			open := gauge(n.reg, "tailsift_archive_open_files")
			n.log.Info("progress",
				"spans_in_per_s", math.Round((in-p.spansIn)/secs),
				"kept_spans_per_s", math.Round((kept-p.spansKept)/secs),
				"buffered_traces", buffered,
				"lag_records", lag,
				"unsettled_records", unsettled,
				"oldest_unsettled", oldest.Round(time.Second).String(),
				"open_archive_files", open,
				"ready", n.consumer.Ready())
			if !explained && lag == 0 && buffered == 0 && open > 0 {
				explained = true
				n.log.Info("input read and decided; kept spans wait in open archive files, written when a file reaches archive.roll_bytes or archive.roll_age, or at shutdown",
					"roll_age", formatDuration(n.cfg.Archive.RollAge), "roll_bytes", formatSize(n.cfg.Archive.RollBytes))
			}
			p = progress{spansIn: in, spansKept: kept, at: now}
		}
	}
}

// spanCounters returns the spans read from Kafka and sent to the archive.
func (n *node) spanCounters() (in, kept float64) {
	return sumCounter(n.reg, "tailsift_router_spans_received_total", "", ""),
		sumCounter(n.reg, "tailsift_sampler_spans_kept_total", "", "")
}
