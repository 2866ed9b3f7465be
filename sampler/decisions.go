package sampler

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
)

// decisionCache remembers what a shard decided for recent traces, so spans
// that arrive late follow the decision made for their trace.
//
// It keys on the whole 16-byte trace ID. A shorter key lets a sender who
// picks trace IDs (or a generator that fills only part of them) make a new
// trace share the key of one dropped just before: its spans, errors
// included, would then all be dropped as late. Dropped traces, the great
// majority of decisions, cost a slot of 16 bytes in a keySet plus a FIFO
// slot; kept traces also hold their decision (rate, reason, time, summary)
// in a map. Both are bounded FIFOs: the oldest decision is forgotten first,
// and a span arriving later than that starts a new trace.
//
// Traces dropped when they reached the span limit are remembered apart, in
// partial, with what was seen of them: their later spans are buffered and
// decided again (see shard.decide), since a later error span, slow span or
// rule match must still keep the rest of the trace.
//
// The sets and FIFOs grow as decisions are made, up to their bounds, rather
// than being sized for the bounds up front: a million-entry cache allocated
// at start costs tens of MB of resident memory and page faults before the
// first span, and a node that decides fewer traces than that never needs it.
//
// Owned by one shard goroutine; not safe for concurrent use.
type decisionCache struct {
	dropped  keySet
	dropFIFO []idKey
	dropHead int
	dropMax  int

	kept     map[TraceID]*KeptDecision
	keptFIFO []TraceID
	keptHead int
	keptMax  int

	partial     map[TraceID]*partialDrop
	partialFIFO []TraceID
	partialHead int
}

func newDecisionCache(size int) *decisionCache {
	if size < 16 {
		size = 16
	}
	return &decisionCache{
		dropped: newKeySet(),
		dropMax: size,
		kept:    make(map[TraceID]*KeptDecision),
		keptMax: size / 4,
		partial: make(map[TraceID]*partialDrop),
	}
}

// idKey is a trace ID as the keySet holds it: two words, compared and
// hashed without a call.
type idKey struct{ lo, hi uint64 }

func cacheKey(id TraceID) idKey {
	return idKey{lo: binary.LittleEndian.Uint64(id[8:]), hi: binary.LittleEndian.Uint64(id[:8])}
}

func (c *decisionCache) addDropped(id TraceID) {
	k := cacheKey(id)
	if !c.dropped.insert(k) {
		return
	}
	c.dropHead = push(&c.dropFIFO, c.dropHead, c.dropMax, k, c.dropped.remove)
}

func (c *decisionCache) addKept(id TraceID, d *KeptDecision) {
	if _, ok := c.kept[id]; ok {
		c.kept[id] = d
		return
	}
	c.kept[id] = d
	c.keptHead = push(&c.keptFIFO, c.keptHead, c.keptMax, id, func(old TraceID) { delete(c.kept, old) })
}

// addPartial remembers p, a trace dropped at the span limit. Such traces
// are rare (each has at least the span limit's spans), so they share the
// kept decisions' bound.
func (c *decisionCache) addPartial(p *partialDrop) {
	if _, ok := c.partial[p.id]; ok {
		c.partial[p.id] = p
		return
	}
	c.partial[p.id] = p
	c.partialHead = push(&c.partialFIFO, c.partialHead, c.keptMax, p.id, func(old TraceID) { delete(c.partial, old) })
}

// push appends k to the ring fifo, evicting the oldest entry once it holds
// max, and returns the new head.
func push[K comparable](fifo *[]K, head, max int, k K, evict func(K)) int {
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

// lookup returns the kept decision for id, or whether it was dropped. A
// trace dropped at the span limit (partial) is neither: its later spans
// are buffered again.
func (c *decisionCache) lookup(id TraceID) (kept *KeptDecision, dropped bool) {
	if d, ok := c.kept[id]; ok {
		return d, false
	}
	return nil, c.dropped.has(cacheKey(id))
}

// partialOf returns the partial drop of id, or nil.
func (c *decisionCache) partialOf(id *TraceID) *partialDrop {
	if len(c.partial) == 0 {
		return nil
	}
	return c.partial[*id]
}

func (c *decisionCache) len() int { return c.dropped.len() + len(c.kept) + len(c.partial) }

// keySet is a set of trace IDs in one flat array: open addressing with
// linear probing in a power-of-two table. It holds the dropped decisions,
// hundreds of thousands a second on a busy node, where a Go map cost a few
// percent of all CPU in hashing, growth and deletes. Here a lookup is a
// multiply and a scan of adjacent slots, usually in one cache line; the
// array holds no pointers, so the GC never scans it; and deleting (the FIFO
// evicts a key for every key it adds once full) shifts the rest of the probe
// run back rather than leaving tombstones, so a table that churns forever
// stays as fast as a fresh one.
//
// The table doubles whenever it would be more than keySetLoadNum/
// keySetLoadDen full, so it grows with the number of keys held and stops at
// the smallest size that holds the FIFO's bound: for a shard's share of the
// default million decisions it is about half full, 32 bytes per key.
type keySet struct {
	slots []idKey // a key, or the zero key for an empty slot
	shift uint    // 64 - log2(len(slots)): a hash's top bits pick a key's home slot
	n     int     // keys in slots
	zero  bool    // the zero key, which an empty slot cannot tell apart
	seed  uint64
}

// keySetLoadNum/keySetLoadDen bounds the fraction of slots in use. Past
// about 0.7, linear probing's runs grow fast: a miss, the common lookup (a
// new trace's first span), probes ½(1+1/(1-α)²) slots on average, 2.5 at
// α=½, 4 at 5/8 and 6 at 0.7.
const (
	keySetLoadNum, keySetLoadDen = 5, 8
	keySetMinSlots               = 16
)

// newKeySet returns an empty set with keySetMinSlots slots. Its seed is
// random, as a Go map's is, so that trace IDs chosen by a sender to share one
// probe run on every node cannot make each lookup a scan of the table.
func newKeySet() keySet {
	return keySet{
		slots: make([]idKey, keySetMinSlots),
		shift: uint(64 - bits.TrailingZeros(keySetMinSlots)),
		seed:  rand.Uint64(),
	}
}

// home returns k's home slot: each half of the ID in turn goes through a
// 64x64->128-bit multiply by an odd constant, folded, the second after
// mixing in the first's result. The multiply carries every bit into the top
// bits, so keys that differ only in a few bits, sequential test IDs or
// 64-bit IDs in either half of the trace ID with the other half zero,
// spread over the table rather than filling one run.
func (s *keySet) home(k idKey) uint64 {
	hi, lo := bits.Mul64(k.lo^s.seed, 0x9e3779b97f4a7c15)
	hi, lo = bits.Mul64(k.hi^hi^lo, 0xbf58476d1ce4e5b9)
	return (hi ^ lo) >> s.shift
}

func (s *keySet) len() int {
	if s.zero {
		return s.n + 1
	}
	return s.n
}

func (s *keySet) has(k idKey) bool {
	if k == (idKey{}) {
		return s.zero
	}
	mask := uint64(len(s.slots) - 1)
	for i := s.home(k); ; i = (i + 1) & mask {
		switch s.slots[i] {
		case k:
			return true
		case idKey{}:
			return false
		}
	}
}

// homeKey returns the key in k's home slot, for reading ahead: it brings
// into the cache the slot a lookup of k reads first.
func (s *keySet) homeKey(k idKey) uint64 { return s.slots[s.home(k)].lo }

// insert adds k and reports whether it was not already held.
func (s *keySet) insert(k idKey) bool {
	if k == (idKey{}) {
		added := !s.zero
		s.zero = true
		return added
	}
	mask := uint64(len(s.slots) - 1)
	i := s.home(k)
	for ; s.slots[i] != (idKey{}); i = (i + 1) & mask {
		if s.slots[i] == k {
			return false
		}
	}
	s.n++
	if s.n*keySetLoadDen > len(s.slots)*keySetLoadNum {
		s.grow()
		s.place(k)
		return true
	}
	s.slots[i] = k
	return true
}

// grow doubles the table and places every key again.
func (s *keySet) grow() {
	old := s.slots
	s.slots = make([]idKey, 2*len(old))
	s.shift--
	for _, k := range old {
		if k != (idKey{}) {
			s.place(k)
		}
	}
}

// place stores k, which the set does not hold, in the first empty slot of
// its probe run.
func (s *keySet) place(k idKey) {
	mask := uint64(len(s.slots) - 1)
	i := s.home(k)
	for s.slots[i] != (idKey{}) {
		i = (i + 1) & mask
	}
	s.slots[i] = k
}

// remove deletes k if it is held. The slot it leaves would cut the probe run
// of any key after it that had to pass it, so each such key moves back into
// the hole, opening a new hole where it was, until the run ends.
func (s *keySet) remove(k idKey) {
	if k == (idKey{}) {
		s.zero = false
		return
	}
	mask := uint64(len(s.slots) - 1)
	i := s.home(k)
	for s.slots[i] != k {
		if s.slots[i] == (idKey{}) {
			return
		}
		i = (i + 1) & mask
	}
	for j := (i + 1) & mask; s.slots[j] != (idKey{}); j = (j + 1) & mask {
		// The key at j may fill the hole at i if i lies on its way from
		// its home to j: its home is at least as far behind j as i is.
		if (j-s.home(s.slots[j]))&mask >= (j-i)&mask {
			s.slots[i] = s.slots[j]
			i = j
		}
	}
	s.slots[i] = idKey{}
	s.n--
}
