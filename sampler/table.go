package sampler

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
)

// traceTable is a shard's buffered traces: their entries in a slab, found
// by trace ID through an open-addressing index.
//
// It replaces a map[TraceID]*buffered with one entry allocated per trace.
// Nothing in it holds a pointer, so the garbage collector never scans it
// (the map, the age queue and the quiet heap of pointers were most of what
// it marked on a draining node), and the hundreds of thousands of traces
// a busy shard starts and decides each second allocate nothing once the
// slab has grown. A lookup hashes the ID with one multiplication instead of
// hashing 16 bytes through the map's generic path, and compares a 32-bit
// tag in the index before it touches the entry.
//
// The age queue and the quiet heap refer to entries by traceRef: slab index
// and generation. An entry's generation changes when its trace leaves the
// table, so a reference that outlived its trace, to a slot another trace
// may now use, is recognised as stale instead of followed.
//
// The slab grows by fixed-size pages rather than by doubling one slice: an
// entry never moves, and growing neither copies the entries nor leaves the
// old array as garbage (as a doubling slice did, several times its final
// size over a drain, all of it fresh memory).
//
// A *buffered from get or insert points into the slab and stays valid while
// its trace is in the table; after remove, until the next insert. Owned by
// one shard goroutine.
type traceTable struct {
	pages [][]buffered // the slab, slabPage entries a page; entry 0 is unused: index 0 means none
	size  uint32       // entries in the slab, used or free
	free  []uint32     // slab indexes free for reuse, most recently freed last
	index []uint64     // tag<<32 | slab index; 0 is an empty slot
	shift uint8        // 64 - log2(len(index))
	n     int          // traces in the table
	seed  [2]uint64    // of the hash, chosen when the index is first made
}

// slabPage is the number of entries in a page of the slab (88 KiB).
const slabPage = 1 << 10

// entry returns slab entry i.
func (t *traceTable) entry(i uint32) *buffered { return &t.pages[i/slabPage][i%slabPage] }

// traceRef refers to a table entry as long as it holds the same trace.
type traceRef struct{ i, gen uint32 }

// tableMinSlots is the index's smallest size, a power of two.
const tableMinSlots = 1 << 10

// hash mixes both halves of the ID, each with a seed of its own, in a
// 64×64→128-bit multiply folded to 64 bits, then mixes the result again the
// same way with a fixed odd constant. IDs are random in practice, but some
// tracers fill only one half, and trace IDs come from clients: with seeds a
// sender does not know, it cannot choose IDs that share a probe sequence and
// turn every lookup into a scan, as a Go map's seed prevents. The second
// multiply is for patterned IDs: after the first alone, sequential IDs in
// one half differ only in a few bits of the product for some seeds (about
// one in a few hundred), and clustered in the index (entries a mean of 1 to
// 38 slots from home, against 0.3).
func (t *traceTable) hash(id *TraceID) uint64 {
	lo := binary.LittleEndian.Uint64(id[:8])
	hi := binary.LittleEndian.Uint64(id[8:])
	h, l := bits.Mul64(lo^t.seed[0], hi^t.seed[1])
	h, l = bits.Mul64(h^l, 0x9e3779b97f4a7c15)
	return h ^ l
}

// slot is where h starts probing. An index entry keeps the high half of its
// hash as a tag, compared before the entry is read; the slot is the tag's
// top bits, so moving entries never reads the slab. The slab index in the
// low half is never 0, so neither is an occupied slot.
func (t *traceTable) slot(h uint64) int { return int(h >> t.shift) }

func (t *traceTable) len() int { return t.n }

// get returns id's entry, or nil.
func (t *traceTable) get(id *TraceID) *buffered {
	if t.n == 0 {
		return nil
	}
	h := t.hash(id)
	tag := h >> 32
	mask := len(t.index) - 1
	for s := t.slot(h); ; s = (s + 1) & mask {
		e := t.index[s]
		if e == 0 {
			return nil
		}
		if e>>32 == tag {
			if b := t.entry(uint32(e)); b.id == *id {
				return b
			}
		}
	}
}

// first returns the entry in the index slot where a lookup of id starts,
// if that slot's tag is id's (usually id's entry), or nil. It is get without
// the probe, for reading ahead (shard.readAhead): loading the slot and the
// entry brings into the cache what get will read.
func (t *traceTable) first(id *TraceID) *buffered {
	if t.n == 0 {
		return nil
	}
	h := t.hash(id)
	if e := t.index[t.slot(h)]; e != 0 && e>>32 == h>>32 {
		return t.entry(uint32(e))
	}
	return nil
}

// insert adds an entry for id, which must not be in the table, and returns
// it with id set and every other field zero but its place and generation.
func (t *traceTable) insert(id *TraceID) *buffered {
	if (t.n+1)*2 > len(t.index) {
		t.grow()
	}
	var i uint32
	if k := len(t.free); k > 0 {
		i = t.free[k-1]
		t.free = t.free[:k-1]
	} else {
		i = max(t.size, 1) // index 0: none
		if int(i/slabPage) == len(t.pages) {
			t.pages = append(t.pages, make([]buffered, slabPage))
		}
		t.size = i + 1
	}
	b := t.entry(i)
	*b = buffered{id: *id, self: i, gen: b.gen, used: true}
	t.place(t.hash(id), i)
	t.n++
	return b
}

// place puts slab index i in the index, at the first free slot from h's.
func (t *traceTable) place(h uint64, i uint32) {
	mask := len(t.index) - 1
	s := t.slot(h)
	for t.index[s] != 0 {
		s = (s + 1) & mask
	}
	t.index[s] = h&^0xffffffff | uint64(i)
}

// grow doubles the index (and sets it up the first time) and places every
// entry again.
func (t *traceTable) grow() {
	if t.index == nil {
		t.seed = [2]uint64{rand.Uint64(), rand.Uint64()}
	}
	n := max(2*len(t.index), tableMinSlots)
	t.index = make([]uint64, n)
	t.shift = uint8(64 - bits.TrailingZeros(uint(n)))
	for i := uint32(1); i < t.size; i++ {
		if b := t.entry(i); b.used {
			t.place(t.hash(&b.id), i)
		}
	}
}

// remove takes b out of the table. Its fields stay readable until the next
// insert; references to it are stale from now on.
func (t *traceTable) remove(b *buffered) {
	h := t.hash(&b.id)
	mask := len(t.index) - 1
	s := t.slot(h)
	for uint32(t.index[s]) != b.self {
		s = (s + 1) & mask
	}
	// Backward-shift deletion: move up every entry after the hole that
	// would not be found past it, so no probe chain is cut.
	for {
		t.index[s] = 0
		next := s
		for {
			next = (next + 1) & mask
			e := t.index[next]
			if e == 0 {
				b.used = false
				b.gen++
				t.free = append(t.free, b.self)
				t.n--
				return
			}
			home := int(e >> t.shift)
			// e may move to s unless its home lies cyclically in (s, next].
			if (next > s && (home <= s || home > next)) || (next < s && home <= s && home > next) {
				t.index[s] = e
				s = next
				break
			}
		}
	}
}

// ref returns a reference to b.
func (t *traceTable) ref(b *buffered) traceRef { return traceRef{b.self, b.gen} }

// at returns the entry r refers to, or nil when its trace has left.
func (t *traceTable) at(r traceRef) *buffered {
	if b := t.entry(r.i); b.used && b.gen == r.gen {
		return b
	}
	return nil
}

// each calls fn for every entry; fn may remove the entry it is given.
func (t *traceTable) each(fn func(b *buffered)) {
	for i := uint32(1); i < t.size; i++ {
		if b := t.entry(i); b.used {
			fn(b)
		}
	}
}
