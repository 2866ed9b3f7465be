package router

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// A wall of bad records is a run of records of one partition that do not
// scan: most of the last wallWindow records, or the first wallFirst records
// of a partition when none has scanned yet. One bad record is a broken
// producer's message, skipped and counted; a wall means the topic is not
// what the node was told (an encoding mismatch, another topic's data), and
// skipping it would commit every record past it: a silent, permanent loss
// that fixing the setting cannot undo. So the node stops that partition
// instead: it stops fetching it, commits nothing past the wall's first
// record, reports not ready with the reason, and the records wait in Kafka
// until the setting is fixed and the node restarted.
//
// Until a wall is recognised, a partition commits nothing past its oldest
// bad record among the last wallWindow read within wallHold: that record
// may be a wall's first. An isolated bad record therefore delays the
// partition's commit by at most wallHold (re-read after a restart, its
// spans are at worst duplicated). A wall written more slowly than
// wallBad records per wallHold loses its first records before it is seen.
const (
	wallWindow = 100
	wallBad    = 75
	wallFirst  = 10
	wallHold   = 15 * time.Second
)

// Reasons a partition is stopped: the label values of
// tailsift_router_stopped_partitions.
const (
	stopLooksJSON  = "looks_like_otlp_json"
	stopLooksProto = "looks_like_otlp_proto"
	stopUnreadable = "unreadable"
)

// walls watches each partition's records for a wall. The poll loop
// updates it; the commit path and readiness read it.
type walls struct {
	encoding string
	mu       sync.Mutex
	parts    map[int32]*wallWatch
	lastLog  time.Time
}

// wallWatch is one partition's recent records.
type wallWatch struct {
	recent  [wallWindow]int64 // offsets of the last records, bad ones negated minus one
	badAt   [wallWindow]int64 // when each bad one among them was read (unix nanos)
	n       int               // records seen, this session
	bad     int               // bad records among recent
	parsed  bool              // a record scanned, this session
	stopped string            // reason, "" while consuming
	paused  bool              // fetching stopped
	holdAt  int64             // the wall's first record, when stopped
	looks   [3]int            // bad records that look like json, protobuf, neither
}

func newWalls(encoding string) *walls {
	return &walls{encoding: encoding, parts: make(map[int32]*wallWatch)}
}

// note records whether the record at offset of partition p scanned, and
// returns the reason to stop p when this record completes a wall.
func (w *walls) note(p int32, offset int64, value []byte, bad bool) (stop string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ww := w.parts[p]
	if ww == nil {
		ww = &wallWatch{}
		w.parts[p] = ww
	}
	i := ww.n % wallWindow
	if ww.n >= wallWindow && ww.recent[i] < 0 {
		ww.bad--
	}
	ww.n++
	if !bad {
		ww.recent[i] = offset
		ww.parsed = true
		return ""
	}
	ww.recent[i] = -offset - 1
	ww.badAt[i] = time.Now().UnixNano()
	ww.bad++
	ww.looks[looksLike(value)]++
	if ww.stopped == "" && (ww.bad >= wallBad || (!ww.parsed && ww.bad >= wallFirst)) {
		ww.holdAt = ww.firstBad(0)
		ww.stopped = w.reason(ww)
	}
	return ww.stopped
}

// firstBad is the offset of the oldest bad record among the recent ones
// read since since (unix nanos), or -1.
func (ww *wallWatch) firstBad(since int64) int64 {
	first := int64(-1)
	for i, o := range ww.recent[:min(ww.n, wallWindow)] {
		if o < 0 && ww.badAt[i] >= since && (first < 0 || -o-1 < first) {
			first = -o - 1
		}
	}
	return first
}

// looksLike classifies a record that did not scan by how it starts: 0 for
// JSON ('{' and a key, after any whitespace), 1 for an OTLP TracesData
// (0x0a: field 1, resource_spans, length-delimited), 2 for neither.
func looksLike(value []byte) int {
	if v := bytes.TrimLeft(value, " \t\r\n"); len(v) > 0 && v[0] == '{' {
		// An object's first key, or its end; protobuf's 0x0a then a
		// length of 123 ('{') is followed by a field tag instead.
		if w := bytes.TrimLeft(v[1:], " \t\r\n"); len(w) > 0 && (w[0] == '"' || w[0] == '}') {
			return 0
		}
	}
	if len(value) > 0 && value[0] == 0x0a {
		return 1
	}
	return 2
}

// reason names what the bad records of ww look like, against the
// configured encoding.
func (w *walls) reason(ww *wallWatch) string {
	switch {
	case w.encoding == EncodingProto && ww.looks[0] > ww.bad/2:
		return stopLooksJSON
	case w.encoding == EncodingJSON && ww.looks[1] > ww.bad/2:
		return stopLooksProto
	}
	return stopUnreadable
}

// advice is what to tell an operator about a stop reason; it quotes no
// record byte beyond the one that gives the format away.
func advice(reason, encoding string) string {
	switch reason {
	case stopLooksJSON:
		return "records start with '{': this looks like otlp_json; set kafka.encoding: otlp_json"
	case stopLooksProto:
		return "records start with byte 0x0a, as protobuf OTLP does: this looks like otlp_proto; set kafka.encoding: otlp_proto"
	}
	return fmt.Sprintf("records are neither %s nor another OTLP encoding tailsift reads: check kafka.topic and the producer", encoding)
}

// hold caps the offsets about to be committed: a stopped partition not
// past its wall, another not past the oldest bad record among its recent
// ones (it may be the start of a wall not yet recognised). committed gives
// what a partition has committed already; a capped offset not past it is
// dropped from offsets.
func (w *walls) hold(offsets map[int32]kgo.EpochOffset, committed func(int32) int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for p, eo := range offsets {
		ww := w.parts[p]
		if ww == nil || ww.bad == 0 {
			continue
		}
		at := ww.holdAt
		if ww.stopped == "" {
			at = ww.firstBad(time.Now().Add(-wallHold).UnixNano())
		}
		if at < 0 || eo.Offset <= at {
			continue
		}
		if at <= committed(p) {
			delete(offsets, p)
			continue
		}
		offsets[p] = kgo.EpochOffset{Epoch: -1, Offset: at}
	}
}

// isStopped reports whether p is stopped.
func (w *walls) isStopped(p int32) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	ww := w.parts[p]
	return ww != nil && ww.stopped != ""
}

// stopped returns the stopped partitions by reason.
func (w *walls) stopped() map[string][]int32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out map[string][]int32
	for p, ww := range w.parts {
		if ww.stopped != "" {
			if out == nil {
				out = make(map[string][]int32)
			}
			out[ww.stopped] = append(out[ww.stopped], p)
		}
	}
	for _, ps := range out {
		slices.Sort(ps)
	}
	return out
}

// pause marks p paused, and reports whether it was not already.
func (w *walls) pause(p int32) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	ww := w.parts[p]
	if ww == nil || ww.paused {
		return false
	}
	ww.paused = true
	return true
}

// forget drops the watch of partitions no longer read here (a member that
// reads one next watches it afresh), and returns those that were paused.
func (w *walls) forget(parts []int32) (paused []int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range parts {
		if ww := w.parts[p]; ww != nil && ww.paused {
			paused = append(paused, p)
		}
		delete(w.parts, p)
	}
	return paused
}

// Stopped returns why partitions are stopped on a wall of bad records, or
// nil when none is.
func (c *Consumer) Stopped() error {
	st := c.walls.stopped()
	if len(st) == 0 {
		return nil
	}
	var msgs []string
	for _, reason := range slices.Sorted(maps.Keys(st)) {
		msgs = append(msgs, fmt.Sprintf("partitions %v of %s stopped: most recent records could not be read as %s; %s; they wait in Kafka, uncommitted",
			st[reason], c.cfg.Topic, c.cfg.Encoding, advice(reason, c.cfg.Encoding)))
	}
	return errors.New(strings.Join(msgs, "; "))
}

// noteScan tells the wall watch whether r scanned; on a wall it stops the
// partition: no more fetches, and no commit past the wall (walls.hold).
func (c *Consumer) noteScan(r *kgo.Record, bad bool) {
	if reason := c.walls.note(r.Partition, r.Offset, r.Value, bad); reason == "" || !c.walls.pause(r.Partition) {
		return
	}
	c.client.PauseFetchPartitions(map[string][]int32{c.cfg.Topic: {r.Partition}})
	c.reportWalls()
}

// reportWalls publishes the stopped partitions on the gauge, and logs them
// at most once a minute.
func (c *Consumer) reportWalls() {
	st := c.walls.stopped()
	for _, reason := range []string{stopLooksJSON, stopLooksProto, stopUnreadable} {
		c.m.stopped.WithLabelValues(reason).Set(float64(len(st[reason])))
	}
	if len(st) == 0 {
		return
	}
	c.walls.mu.Lock()
	due := time.Since(c.walls.lastLog) >= time.Minute
	if due {
		c.walls.lastLog = time.Now()
	}
	c.walls.mu.Unlock()
	if due {
		c.cfg.Logger.Error("stopped reading partitions on a wall of unreadable records; fix the setting and restart",
			"topic", c.cfg.Topic, "encoding", c.cfg.Encoding, "err", c.Stopped())
	}
}

// resumeForgotten lets partitions no longer read here be fetched again
// should they come back: their wall is watched afresh, and the guard
// watches them afresh too.
func (c *Consumer) resumeForgotten(parts []int32) {
	if c.guard != nil {
		c.guard.forget(parts)
	}
	if resume := c.walls.forget(parts); len(resume) > 0 {
		c.client.ResumeFetchPartitions(map[string][]int32{c.cfg.Topic: resume})
	}
}

// committedOffset is the offset last committed for partition p, -1 for
// none.
func (t *tracker) committedOffset(p int32) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if pt := t.parts[p]; pt != nil && !pt.held {
		return pt.committed
	}
	return -1
}
