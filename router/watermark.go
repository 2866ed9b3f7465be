package router

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// Watermarks track how far, in record time, this consumer has read each
// partition of the topic.
//
// They are the sampler's clock. A trace is complete when its last span is a
// quiet period old — old in record time, measured against the slowest
// partition of the topic. Against the wall clock, a partition nobody reads
// for a while (a member killed and not yet timed out of the group, a broker
// slow to serve one partition, a backlog read unevenly) would let traces be
// decided before their spans in that partition arrive: an error span read
// after its trace was dropped is lost. With watermarks, decisions simply
// wait until every partition has been read past the trace.
//
// A partition read to its end is caught up: its watermark is the time it was
// last seen at its end. A partition of the topic that is not assigned here
// holds the watermark where it was (in a cluster, peers report the
// partitions they read; see Report and cluster.Watermarks).
type Watermarks struct {
	mu    sync.Mutex
	parts map[int32]*partWM // assigned partitions
	count int32             // partitions of the topic, 0 until known
	last  int64             // last value returned: the watermark never goes back
	peers map[string]report // what other nodes read, by node
	// elsewhere is, per partition, the highest watermark any other node
	// reported for it, kept after the node is forgotten.
	elsewhere map[int32]int64
	floor     func() int64 // earliest record time held here unsent, 0 for none
}

// SetFloor installs a function returning the earliest record time of spans
// this node read but has not yet handed to their owners (orphans waiting
// to be routed again), or 0. Neither the watermark nor the reports for
// peers go past it.
func (w *Watermarks) SetFloor(f func() int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.floor = f
}

// capped limits v to just before the floor.
func (w *Watermarks) capped(v int64) int64 {
	if w.floor != nil {
		if f := w.floor(); f > 0 && v >= f {
			return f - 1
		}
	}
	return v
}

// report is a peer's watermarks for the partitions it reads.
type report struct {
	parts map[int32]int64
	at    int64 // when the peer made it, by its clock
}

type partWM struct {
	pos      int64 // next offset to read, -1 unknown
	end      int64 // log end offset at the last check, -1 unknown
	endAt    int64 // when end was read (unix nanos)
	lastTs   int64 // largest record timestamp read
	caughtAt int64 // when pos reached end, 0 if not at the end
}

// NewWatermarks returns watermarks for a Consumer to keep (Config.Watermarks)
// and a sampler to read (sampler.Config.InputClock).
func NewWatermarks() *Watermarks {
	return &Watermarks{parts: make(map[int32]*partWM), peers: make(map[string]report), elsewhere: make(map[int32]int64)}
}

func (w *Watermarks) assign(parts []int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range parts {
		if w.parts[p] == nil {
			w.parts[p] = &partWM{pos: -1, end: -1}
		}
	}
}

// assignedParts returns the partitions assigned here.
func (w *Watermarks) assignedParts() []int32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]int32, 0, len(w.parts))
	for p := range w.parts {
		out = append(out, p)
	}
	return out
}

func (w *Watermarks) revoke(parts []int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range parts {
		delete(w.parts, p)
	}
}

// read records that the consumer polled offset, written at ts.
func (w *Watermarks) read(partition int32, offset, ts int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.parts[partition]
	if p == nil {
		return
	}
	p.pos = max(p.pos, offset+1)
	p.lastTs = max(p.lastTs, ts)
	if p.end >= 0 && p.pos < p.end {
		p.caughtAt = 0
	}
}

// ends records the log end offsets read at time at, and the committed
// offsets, which give the position of a partition not read from yet.
func (w *Watermarks) ends(count int32, end, committed map[int32]int64, at int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.count = count
	for id, p := range w.parts {
		e, ok := end[id]
		if !ok {
			continue
		}
		if p.pos < 0 {
			if c, ok := committed[id]; ok && c >= 0 {
				p.pos = c
			} else if e == 0 {
				p.pos = 0
			}
		}
		p.end, p.endAt = e, at
		if p.pos >= 0 && p.pos >= e {
			p.caughtAt = at
		} else {
			p.caughtAt = 0
		}
	}
}

// Partitions returns the watermark of each partition assigned here, in unix
// nanoseconds; 0 means unknown yet.
func (w *Watermarks) Partitions() map[int32]int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[int32]int64, len(w.parts))
	for id, p := range w.parts {
		out[id] = w.capped(p.value())
	}
	return out
}

// Lag returns, for each partition assigned here whose position and end are
// known, the records between this consumer's read position and the log end
// offset last read (at most 250ms old).
func (w *Watermarks) Lag() map[int32]int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[int32]int64, len(w.parts))
	for id, p := range w.parts {
		if p.pos >= 0 && p.end >= 0 {
			out[id] = max(0, p.end-p.pos)
		}
	}
	return out
}

// value is the partition's watermark: when it was last seen at its end, or
// else the newest record read.
func (p *partWM) value() int64 {
	if p.caughtAt > 0 {
		return max(p.caughtAt, p.lastTs)
	}
	return p.lastTs
}

// Count is the number of partitions of the topic, 0 until known.
func (w *Watermarks) Count() int32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.count
}

// Report records the watermarks a peer reported for the partitions it
// reads (replacing its previous report), made at time at by its clock.
func (w *Watermarks) Report(node string, parts map[int32]int64, at int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if old, ok := w.peers[node]; ok && old.at > at {
		return // reordered: keep the newer
	}
	w.peers[node] = report{parts: parts, at: at}
	for p, v := range parts {
		w.elsewhere[p] = max(w.elsewhere[p], v)
	}
}

// ReadElsewhere is the highest watermark another node reported for
// partition p, or 0: records of p written up to then were read there. A
// node given p counts the records it reads again (a revoke or a crash
// left them uncommitted).
func (w *Watermarks) ReadElsewhere(p int32) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.elsewhere[p]
}

// Forget drops a departed peer's report. Its partitions then hold the
// watermark until a live member reads them again: what the peer read but
// never handed on must be read again before traces around it are decided.
func (w *Watermarks) Forget(node string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.peers, node)
}

// Now returns the topic's watermark: the minimum over all partitions of the
// topic, each as read here or, for partitions read by peers, as they last
// reported. While any partition is read by nobody known, the watermark does
// not move; it never goes back.
func (w *Watermarks) Now() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.count == 0 {
		return time.Unix(0, w.last)
	}
	low := int64(-1)
	for p := int32(0); p < w.count; p++ {
		var v int64
		if lp, ok := w.parts[p]; ok {
			v = w.capped(lp.value())
		} else {
			var newest int64 = -1
			for _, r := range w.peers {
				if pv, ok := r.parts[p]; ok && r.at > newest {
					newest, v = r.at, pv
				}
			}
			if newest < 0 {
				return time.Unix(0, w.last) // nobody reads p
			}
		}
		if low < 0 || v < low {
			low = v
		}
	}
	w.last = max(w.last, low)
	return time.Unix(0, w.last)
}

// refresh reads the log end offsets (and committed offsets) every interval
// until ctx is done.
func (w *Watermarks) refresh(ctx context.Context, adm *kadm.Client, topic, group string, interval time.Duration, onErr func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		at := time.Now().UnixNano()
		ends, err := adm.ListEndOffsets(rctx, topic)
		var committed kadm.OffsetResponses
		if err == nil {
			// Before the group's first commit there is no group to ask:
			// positions then come from the records read.
			committed, _ = adm.FetchOffsets(rctx, group)
		}
		cancel()
		if err == nil {
			end := map[int32]int64{}
			com := map[int32]int64{}
			var count int32
			ends.Each(func(o kadm.ListedOffset) {
				if o.Err == nil {
					end[o.Partition] = o.Offset
					count++
				}
			})
			committed.Each(func(o kadm.OffsetResponse) {
				if o.Topic == topic && o.Err == nil {
					com[o.Partition] = o.At
				}
			})
			if count == int32(len(ends[topic])) {
				w.ends(count, end, com, at)
			}
		} else if ctx.Err() == nil && onErr != nil {
			onErr(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
