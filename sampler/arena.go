package sampler

import (
	"time"
	"unsafe"
)

// A buffered span is kept in chunks of arenaChunk bytes owned by its shard:
// a fixed-size record (spanRecord) followed by the span's encoded bytes. It
// holds nothing else: not the Kafka record around it (resource, framing,
// other traces' spans), nor the fetch response that record was cut from.
//
// Records hold no Go pointers (the scope and input unit are indexes into
// the shard's tables, the next span of the trace is an arena reference),
// and the chunks, where the platform allows (see reserveArena), are memory
// mapped by the shard outside the garbage-collected heap. So the collector
// neither scans buffered spans nor counts them toward its growth allowance
// (GOGC), which would otherwise double their footprint between
// collections, and chunks are not faulted in afresh as the heap grows. A
// chunk counts the buffered spans it holds and is reused as soon as the
// last of them is decided, so memory follows the buffer, not the
// allocation rate. Room larger than arenaMaxCopy is a chunk of its own
// on the heap, freed with it.
//
// Spans are read from the arena only on the shard goroutine, while their
// trace is buffered: a trace that leaves the shard (kept, or set aside for
// another node) gets heap copies of its span bytes first, so what the
// archive or a peer holds has the lifetime the garbage collector gives it.
const (
	arenaChunk   = 64 << 10
	arenaMaxCopy = arenaChunk / 4
)

// spanRef locates a record in a shard's arena: chunk index plus one in the
// high 32 bits, byte offset in the low 32. The zero spanRef is none.
type spanRef uint64

func (r spanRef) chunk() int { return int(r>>32) - 1 }
func (r spanRef) off() int   { return int(uint32(r)) }

// spanArena hands out 4-byte aligned room in chunks.
type spanArena struct {
	mem     []byte // the mapped region, nil until first used or if mapping failed
	reserve int    // bytes to map on first use
	failed  bool   // mapping failed: chunks come from the heap
	bumped  int    // bytes of mem handed out as chunks

	chunks  [][]byte // by index: a chunk of mem or of the heap, nil when unused
	refs    []int32  // by index, the records in the chunk
	unused  []int32  // indexes of nil chunks, for reuse
	free    []int32  // empty full-size chunks, most recently freed last
	cold    []int32  // empty chunks of mem whose pages went back to the system
	cur     int      // index of the chunk being filled, -1 when none
	used    int      // bytes of cur handed out
	live    int      // chunks holding at least one record
	minFree int      // fewest free chunks since the last trim

	nextTrim time.Time
}

func newSpanArena(reserve int) spanArena {
	return spanArena{reserve: (reserve + arenaChunk - 1) / arenaChunk * arenaChunk, cur: -1}
}

// alloc returns a reference to n bytes of room, 4-byte aligned, and the
// room itself. The room's chunk counts one more record. Room for more than
// arenaMaxCopy is a chunk of its own, of exactly n bytes.
func (a *spanArena) alloc(n int) (spanRef, []byte) {
	if n > arenaMaxCopy {
		i := a.index(make([]byte, n))
		a.pin(i)
		return spanRef(uint64(i+1) << 32), a.chunks[i]
	}
	if a.cur < 0 || arenaChunk-a.used < n {
		a.nextChunk()
	}
	off := a.used
	a.used += (n + 3) &^ 3
	a.pin(a.cur)
	return spanRef(uint64(a.cur+1)<<32 | uint64(off)), a.chunks[a.cur][off : off+n : off+n]
}

func (a *spanArena) pin(i int) {
	if a.refs[i] == 0 {
		a.live++
	}
	a.refs[i]++
}

// index gives chunk c an index.
func (a *spanArena) index(c []byte) int {
	if k := len(a.unused); k > 0 {
		i := int(a.unused[k-1])
		a.unused = a.unused[:k-1]
		a.chunks[i] = c
		return i
	}
	a.chunks = append(a.chunks, c)
	a.refs = append(a.refs, 0)
	return len(a.chunks) - 1
}

// nextChunk makes an empty chunk current: a freed one, else fresh memory
// from mem, else from the heap.
func (a *spanArena) nextChunk() {
	if a.cur >= 0 && a.refs[a.cur] == 0 {
		a.free = append(a.free, int32(a.cur))
	}
	a.used = 0
	switch {
	case len(a.free) > 0:
		a.cur = int(a.free[len(a.free)-1])
		a.free = a.free[:len(a.free)-1]
		a.minFree = min(a.minFree, len(a.free))
		return
	case len(a.cold) > 0:
		a.cur = int(a.cold[len(a.cold)-1])
		a.cold = a.cold[:len(a.cold)-1]
		return
	}
	if a.mem == nil && !a.failed {
		if a.mem = reserveArena(a.reserve); a.mem == nil {
			a.failed = true
		}
	}
	if a.bumped+arenaChunk <= len(a.mem) {
		a.cur = a.index(a.mem[a.bumped : a.bumped+arenaChunk : a.bumped+arenaChunk])
		a.bumped += arenaChunk
		return
	}
	a.cur = a.index(make([]byte, arenaChunk))
}

// at returns the bytes of the chunk of r from r on.
func (a *spanArena) at(r spanRef) []byte { return a.chunks[r.chunk()][r.off():] }

// release drops one record of r's chunk; its bytes must not be read again.
func (a *spanArena) release(r spanRef) {
	i := r.chunk()
	a.refs[i]--
	if a.refs[i] > 0 {
		return
	}
	a.live--
	switch {
	case len(a.chunks[i]) != arenaChunk || cap(a.chunks[i]) != arenaChunk: // a large span's own chunk
		a.chunks[i] = nil
		a.unused = append(a.unused, int32(i))
	case i == a.cur:
		a.used = 0 // refill the current chunk from its start
	default:
		a.free = append(a.free, int32(i))
	}
}

// inMem reports whether chunk c is part of mem.
func (a *spanArena) inMem(c []byte) bool {
	if a.mem == nil {
		return false
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(c)))
	base := uintptr(unsafe.Pointer(unsafe.SliceData(a.mem)))
	return p >= base && p < base+uintptr(len(a.mem))
}

// arenaTrimInterval is how often a shard returns unused chunks.
const arenaTrimInterval = 10 * time.Second

// trim returns, every arenaTrimInterval, the free chunks that stayed free
// throughout the last interval (the fewest free at any point), the longest
// unused first: mapped pages to the system, heap chunks to the garbage
// collector. Memory freed and filled again within an interval, the
// buffer's ebb and flow as traces are decided, stays resident and is not
// faulted in again; a burst's peak is given back once it has passed.
func (a *spanArena) trim(now time.Time) {
	if now.Before(a.nextTrim) {
		return
	}
	a.nextTrim = now.Add(arenaTrimInterval)
	n := min(a.minFree, len(a.free))
	for _, i := range a.free[:n] {
		if c := a.chunks[i]; a.inMem(c) {
			releaseArena(c)
			a.cold = append(a.cold, i)
		} else {
			a.chunks[i] = nil
			a.unused = append(a.unused, i)
		}
	}
	a.free = a.free[:copy(a.free, a.free[n:])]
	a.minFree = len(a.free)
}

// close unmaps the region if no record is in it.
func (a *spanArena) close() {
	if a.mem != nil && a.live == 0 {
		unmapArena(a.mem)
		*a = spanArena{reserve: a.reserve, cur: -1, failed: true}
	}
}
