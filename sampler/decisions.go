package sampler

import "encoding/binary"

// decisionCache remembers what a shard decided for recent traces, so spans
// that arrive late follow the decision made for their trace.
//
// It keys on the low 64 bits of the trace ID (collisions among a few million
// random IDs are vanishingly unlikely, and a collision only makes one late
// span follow another trace's decision). Dropped traces cost a map entry of
// 8 bytes plus a FIFO slot; kept traces also hold their decision (rate, reason, time, summary).
// Both are bounded FIFOs: the oldest decision is forgotten first, and a span
// arriving later than that starts a new trace.
//
// The maps and FIFOs grow as decisions are made, up to their bounds, rather
// than being sized for the bounds up front: a million-entry cache allocated
// at start costs tens of MB of resident memory and page faults before the
// first span, and a node that decides fewer traces than that never needs it.
//
// Owned by one shard goroutine; not safe for concurrent use.
type decisionCache struct {
	dropped  map[uint64]struct{}
	dropFIFO []uint64
	dropHead int
	dropMax  int

	kept     map[uint64]*KeptDecision
	keptFIFO []uint64
	keptHead int
	keptMax  int
}

func newDecisionCache(size int) *decisionCache {
	if size < 16 {
		size = 16
	}
	return &decisionCache{
		dropped: make(map[uint64]struct{}),
		dropMax: size,
		kept:    make(map[uint64]*KeptDecision),
		keptMax: size / 4,
	}
}

func cacheKey(id TraceID) uint64 { return binary.LittleEndian.Uint64(id[8:]) }

func (c *decisionCache) addDropped(id TraceID) {
	k := cacheKey(id)
	if _, ok := c.dropped[k]; ok {
		return
	}
	c.dropped[k] = struct{}{}
	c.dropHead = push(&c.dropFIFO, c.dropHead, c.dropMax, k, func(old uint64) { delete(c.dropped, old) })
}

func (c *decisionCache) addKept(id TraceID, d *KeptDecision) {
	k := cacheKey(id)
	if _, ok := c.kept[k]; ok {
		c.kept[k] = d
		return
	}
	c.kept[k] = d
	c.keptHead = push(&c.keptFIFO, c.keptHead, c.keptMax, k, func(old uint64) { delete(c.kept, old) })
}

// push appends k to the ring fifo, evicting the oldest entry once it holds
// max, and returns the new head.
func push(fifo *[]uint64, head, max int, k uint64, evict func(uint64)) int {
	if len(*fifo) < max {
		*fifo = append(*fifo, k)
		return head
	}
	evict((*fifo)[head])
	(*fifo)[head] = k
	head++
	if head == len(*fifo) {
		head = 0
	}
	return head
}

// lookup returns the kept decision for id, or whether it was dropped.
func (c *decisionCache) lookup(id TraceID) (kept *KeptDecision, dropped bool) {
	k := cacheKey(id)
	if d, ok := c.kept[k]; ok {
		return d, false
	}
	_, dropped = c.dropped[k]
	return nil, dropped
}

func (c *decisionCache) len() int { return len(c.dropped) + len(c.kept) }
