package router

import (
	"sync"
	"time"

	"github.com/tailsift/tailsift/sampler"
	"github.com/twmb/franz-go/pkg/kgo"
)

// tracked is one record whose spans are in flight.
type tracked struct {
	sampler.Pending
	offset int64
	seen   int64 // unix nanos when the record was polled
}

// partitionTrack is the in-flight records of one partition, in offset order.
type partitionTrack struct {
	recs []*tracked
	head int
	// next is the offset to commit: every record before it is settled.
	next      int64
	committed int64 // last offset committed, -1 before the first commit
	// first and end bound the offsets tracked, end one past the last.
	first, end int64
	// held: the partition was revoked or lost. Nothing is committed for
	// it, but what was read stays known in case it comes back (see hold).
	held bool
}

// tracker knows, per partition, how far the records are settled.
type tracker struct {
	mu    sync.Mutex
	topic string
	parts map[int32]*partitionTrack
}

func newTracker(topic string) *tracker {
	return &tracker{topic: topic, parts: make(map[int32]*partitionTrack)}
}

// track registers a polled record and returns the counter its spans settle,
// or nil if the record was read here before its partition left and came
// back: its spans are still on this node, and must not be handed over again.
func (t *tracker) track(partition int32, offset int64, now int64) *tracked {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.parts[partition]
	if p != nil && p.held && !p.resume(offset) {
		p = nil
	}
	if p == nil {
		p = &partitionTrack{next: offset, committed: -1, first: offset, end: offset}
		t.parts[partition] = p
	}
	if offset < p.end {
		return nil
	}
	p.end = offset + 1
	r := &tracked{offset: offset, seen: now}
	p.recs = append(p.recs, r)
	return r
}

// hold stops committing parts, revoked or lost, but keeps what was read
// from them. The group restarts a partition at its committed offset, and
// records are committed only once settled, which takes a quiet period and
// an archive roll: a partition that comes back to this node would be read
// again from there, and every span this node still holds counted and
// archived twice.
func (t *tracker) hold(parts []int32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, part := range parts {
		if p := t.parts[part]; p != nil {
			p.held = true
		}
	}
}

// resume takes back a held partition whose reading restarts at from, the
// group's committed offset. It reports false when from is outside what was
// read here: another member read past it, or the offset was reset, and what
// this node holds no longer tells what comes next.
func (p *partitionTrack) resume(from int64) bool {
	if from < p.first || from > p.end {
		return false
	}
	p.held = false
	// Records before from are committed: another member settled them.
	for p.head < len(p.recs) && p.recs[p.head].offset < from {
		p.recs[p.head] = nil
		p.head++
	}
	p.next = max(p.next, from)
	p.committed = from
	return true
}

// advance moves each partition's commit point past its settled prefix.
func (t *tracker) advance() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.parts {
		p.advance()
	}
}

func (p *partitionTrack) advance() {
	for p.head < len(p.recs) && p.recs[p.head].Settled() {
		p.next = p.recs[p.head].offset + 1
		p.recs[p.head] = nil
		p.head++
	}
	if p.head == len(p.recs) {
		p.recs, p.head = p.recs[:0], 0
	} else if p.head > 4096 && p.head > len(p.recs)/2 {
		n := copy(p.recs, p.recs[p.head:])
		clear(p.recs[n:])
		p.recs, p.head = p.recs[:n], 0
	}
}

// commitable returns the offsets that may be committed and have not been.
func (t *tracker) commitable() map[string]map[int32]kgo.EpochOffset {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out map[int32]kgo.EpochOffset
	for part, p := range t.parts {
		if p.next > p.committed && !p.held {
			if out == nil {
				out = make(map[int32]kgo.EpochOffset)
			}
			out[part] = kgo.EpochOffset{Epoch: -1, Offset: p.next}
		}
	}
	if out == nil {
		return nil
	}
	return map[string]map[int32]kgo.EpochOffset{t.topic: out}
}

// committed records a successful commit.
func (t *tracker) committed(offsets map[string]map[int32]kgo.EpochOffset) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for part, eo := range offsets[t.topic] {
		if p := t.parts[part]; p != nil && eo.Offset > p.committed {
			p.committed = eo.Offset
		}
	}
}

// forget drops partitions this node no longer consumes. Their in-flight
// spans still settle, but the new owner re-reads them from the last commit.
func (t *tracker) forget(parts []int32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range parts {
		delete(t.parts, p)
	}
}

// unsettled is, per partition, the number of records in flight and the age
// of the oldest one.
type unsettled struct {
	records int
	oldest  time.Duration
}

func (t *tracker) unsettled(now int64) (map[int32]unsettled, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[int32]unsettled, len(t.parts))
	total := 0
	for part, p := range t.parts {
		if p.held {
			continue
		}
		u := unsettled{records: len(p.recs) - p.head}
		if u.records > 0 {
			u.oldest = time.Duration(now - p.recs[p.head].seen)
		}
		total += u.records
		out[part] = u
	}
	return out, total
}
