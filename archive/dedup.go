package archive

import (
	"github.com/cespare/xxhash/v2"
	"github.com/tailsift/tailsift/sampler"
)

// recentSpans remembers the kept spans this writer took lately, to write a
// second copy of one not at all.
//
// A Kafka record read twice (by a partition's new reader after a
// rebalance, or after a crash, from the last committed offset) sends its
// spans to their trace's owner again. The copy is byte for byte the span
// already taken: in the same decision while the owner still buffered the
// trace, or as a late span of the decision made meanwhile. Spans are known
// by a 64-bit hash of their trace ID, bytes and times (two distinct spans of a
// million remembered collide with odds of 1 in 10^13); the memory is two
// generations of at most recentSpansGen hashes each, about 40 MiB at most.
type recentSpans struct {
	cur, prev map[uint64]struct{}
	d         xxhash.Digest
}

// recentSpansGen is the hashes a generation holds: with the last, the
// spans kept in the past minutes at tens of thousands a second, long
// enough for a rebalance's re-reads to reach the archive.
const recentSpansGen = 1 << 20

// spanKey identifies a span of trace id. The trace ID is part of it: the
// bytes a span is kept as leave it out, and spans of two traces may
// otherwise be alike byte for byte.
func (r *recentSpans) spanKey(id *sampler.TraceID, sp *sampler.Span) uint64 {
	d := &r.d
	d.Reset()
	d.Write(id[:])
	d.Write(sp.Raw)
	return d.Sum64() ^ uint64(sp.Start)*0x9e3779b97f4a7c15 ^ uint64(sp.End)
}

// seen reports whether sp, of trace id, was taken before, and remembers it.
func (r *recentSpans) seen(id *sampler.TraceID, sp *sampler.Span) bool {
	k := r.spanKey(id, sp)
	if _, ok := r.cur[k]; ok {
		return true
	}
	if _, ok := r.prev[k]; ok {
		return true
	}
	if r.cur == nil || len(r.cur) >= recentSpansGen {
		r.prev, r.cur = r.cur, make(map[uint64]struct{}, recentSpansGen/8)
	}
	r.cur[k] = struct{}{}
	return false
}

// dropCopies removes from k the spans taken before and returns their
// sources: they may settle only once the copy taken first is durable.
func (w *Writer) dropCopies(k *sampler.Kept) []*sampler.Pending {
	var srcs []*sampler.Pending
	kept := k.Spans[:0]
	for i := range k.Spans {
		sp := &k.Spans[i]
		if !w.recent.seen(&k.ID, sp) {
			kept = append(kept, *sp)
			continue
		}
		w.m.duplicates.Inc()
		if sp.Src != nil {
			srcs = append(srcs, sp.Src)
		}
	}
	clear(k.Spans[len(kept):])
	k.Spans = kept
	return srcs
}

// settleWithOpenFiles makes srcs settle once every file open now is
// closed: the first copy of their spans is in one of them, or in a file
// already durable.
func (w *Writer) settleWithOpenFiles(srcs []*sampler.Pending) {
	if len(w.files) == 0 {
		for _, p := range srcs {
			p.Done()
		}
		return
	}
	for _, p := range srcs {
		p.Add(len(w.files) - 1)
		for _, f := range w.files {
			f.pending = append(f.pending, p)
		}
	}
}
