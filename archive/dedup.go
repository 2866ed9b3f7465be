package archive

import (
	"bytes"

	"github.com/cespare/xxhash/v2"
	"github.com/tailsift/tailsift/sampler"
)

// copies finds exact copies of a span among the spans of one trace.
//
// A Kafka record read twice (by a new reader after a rebalance, or after a
// crash, from the last committed offset) sends its spans to their trace's
// owner again. While the owner still buffers the trace, or holds the late
// spans of a kept one in the same row group, the second copy comes to the
// archive beside the first, byte for byte the same. Writing it once costs
// a hash of each kept span; a copy in another file is not seen here.
type copies struct {
	seen map[uint64]*sampler.Span
}

// drop removes from held, sorted by trace ID, every span whose bytes equal
// a span before it in the same trace, and returns how many it removed.
// The removed spans stay in their file's pending list: they settle with
// the copy that is written.
func (c *copies) drop(held []*sampler.Kept) int {
	if c.seen == nil {
		c.seen = make(map[uint64]*sampler.Span)
	}
	removed := 0
	for i := 0; i < len(held); {
		j := i + 1
		n := len(held[i].Spans)
		for j < len(held) && held[j].ID == held[i].ID {
			n += len(held[j].Spans)
			j++
		}
		if n > 1 {
			clear(c.seen)
			for _, k := range held[i:j] {
				kept := k.Spans[:0]
				for s := range k.Spans {
					sp := &k.Spans[s]
					h := xxhash.Sum64(sp.Raw) ^ uint64(sp.Start) ^ uint64(sp.End)<<1
					if prev, ok := c.seen[h]; ok && sameSpan(prev, sp) {
						removed++
						continue
					}
					kept = append(kept, *sp)
					c.seen[h] = &kept[len(kept)-1]
				}
				clear(k.Spans[len(kept):])
				k.Spans = kept
			}
		}
		i = j
	}
	clear(c.seen)
	return removed
}

func sameSpan(a, b *sampler.Span) bool {
	return a.Start == b.Start && a.End == b.End && bytes.Equal(a.Raw, b.Raw)
}
