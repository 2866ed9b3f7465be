package sampler

import (
	"bytes"
	"time"
	"unsafe"
)

// Span bytes are copied into chunks of arenaChunk bytes, owned by the shard.
// A buffered span then holds its encoded bytes and nothing else: not the
// Kafka record around it (resource, framing, other traces' spans), nor the
// fetch response that record was cut from, which would otherwise stay alive
// as long as any one of its spans is buffered. Spans larger than
// arenaMaxCopy get an allocation of their own.
//
// Where the platform allows (see reserveArena), the chunks live in memory
// mapped by the shard, outside the garbage-collected heap: the collector
// neither scans nor counts them, so the heap's growth allowance (GOGC)
// applies to the small per-span records only, not to the bytes, which are
// most of a buffered trace. A chunk counts the buffered spans it holds and
// is reused as soon as the last of them is decided, so memory follows the
// buffer instead of the allocation rate. A span's bytes never leave the
// shard in a chunk: kept traces and traces set aside for another node get
// a heap copy first (detach), so what the archive or a peer holds has the
// lifetime the garbage collector gives it.
const (
	arenaChunk   = 64 << 10
	arenaMaxCopy = arenaChunk / 8
)

// spanArena hands out copies of span bytes packed into chunks.
type spanArena struct {
	mem      []byte  // the mapped region, nil until the first copy or when mapping failed
	reserve  int     // bytes to map on first use
	failed   bool    // mapping failed: chunks come from the heap
	bumped   int     // chunks of mem handed out at least once
	refs     []int32 // per chunk of mem, the buffered spans in it
	free     []int32 // chunks with no span, most recently freed last
	cold     []int32 // free chunks whose memory went back to the system
	cur      int32   // chunk being filled, -1 when none
	used     int     // bytes of cur handed out
	live     int     // chunks holding at least one span
	minFree  int     // fewest free chunks since the last trim
	nextTrim time.Time
	heap     []byte // chunk being filled when mem is unavailable or full
}

func newSpanArena(reserve int) spanArena {
	return spanArena{reserve: (reserve + arenaChunk - 1) / arenaChunk * arenaChunk, cur: -1}
}

// copy returns a copy of b with no spare capacity.
func (a *spanArena) copy(b []byte) []byte {
	if len(b) > arenaMaxCopy {
		return bytes.Clone(b)
	}
	if a.mem == nil && !a.failed {
		if a.mem = reserveArena(a.reserve); a.mem == nil {
			a.failed = true
		} else {
			a.refs = make([]int32, len(a.mem)/arenaChunk)
		}
	}
	if a.cur < 0 || arenaChunk-a.used < len(b) {
		if !a.nextChunk() {
			return a.heapCopy(b)
		}
	}
	off := int(a.cur)*arenaChunk + a.used
	n := copy(a.mem[off:off+len(b)], b)
	a.used += n
	if a.refs[a.cur] == 0 {
		a.live++
	}
	a.refs[a.cur]++
	return a.mem[off : off+n : off+n]
}

// nextChunk makes a fresh chunk of mem current, or reports false when mem
// has none.
func (a *spanArena) nextChunk() bool {
	if a.mem == nil {
		return false
	}
	if a.cur >= 0 && a.refs[a.cur] == 0 {
		a.free = append(a.free, a.cur)
	}
	a.cur, a.used = -1, 0
	switch {
	case len(a.free) > 0:
		a.cur = a.free[len(a.free)-1]
		a.free = a.free[:len(a.free)-1]
		a.minFree = min(a.minFree, len(a.free))
	case len(a.cold) > 0:
		a.cur = a.cold[len(a.cold)-1]
		a.cold = a.cold[:len(a.cold)-1]
	case a.bumped < len(a.refs):
		a.cur = int32(a.bumped)
		a.bumped++
	default:
		return false
	}
	return true
}

// heapCopy is copy without a mapped region: chunks on the heap, freed by
// the garbage collector once no span in them is referenced.
func (a *spanArena) heapCopy(b []byte) []byte {
	if cap(a.heap)-len(a.heap) < len(b) {
		a.heap = make([]byte, 0, arenaChunk)
	}
	n := len(a.heap)
	a.heap = append(a.heap, b...)
	return a.heap[n:len(a.heap):len(a.heap)]
}

// chunkOf returns the chunk of mem that b's bytes are in, or -1.
func (a *spanArena) chunkOf(b []byte) int32 {
	if len(b) == 0 || a.mem == nil {
		return -1
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	base := uintptr(unsafe.Pointer(unsafe.SliceData(a.mem)))
	if p < base || p >= base+uintptr(len(a.mem)) {
		return -1
	}
	return int32((p - base) / arenaChunk)
}

// release gives back the bytes of a span that leaves the buffer. Its Raw
// must not be read afterwards.
func (a *spanArena) release(b []byte) {
	i := a.chunkOf(b)
	if i < 0 {
		return
	}
	a.refs[i]--
	if a.refs[i] > 0 {
		return
	}
	a.live--
	if i == a.cur {
		a.used = 0 // refill the current chunk from its start
	} else {
		a.free = append(a.free, i)
	}
}

// detach moves the bytes of spans that leave the shard with them (kept, or
// set aside for another node) out of the arena into one heap allocation,
// and releases their chunks.
func (a *spanArena) detach(spans []Span) {
	n := 0
	for i := range spans {
		if a.chunkOf(spans[i].Raw) >= 0 {
			n += len(spans[i].Raw)
		}
	}
	if n == 0 {
		return
	}
	buf := make([]byte, 0, n)
	for i := range spans {
		raw := spans[i].Raw
		if a.chunkOf(raw) < 0 {
			continue
		}
		off := len(buf)
		buf = append(buf, raw...)
		spans[i].Raw = buf[off:len(buf):len(buf)]
		a.release(raw)
	}
}

// arenaTrimInterval is how often a shard returns unused chunks to the
// system.
const arenaTrimInterval = 10 * time.Second

// trim returns to the system, every arenaTrimInterval, the free chunks
// that stayed free throughout the last interval (the fewest free at any
// point), the longest unused first. Memory freed and filled again within
// an interval, the buffer's ebb and flow as traces are decided, stays
// resident and is not faulted in again; a burst's peak is given back once
// it has passed.
func (a *spanArena) trim(now time.Time) {
	if now.Before(a.nextTrim) {
		return
	}
	a.nextTrim = now.Add(arenaTrimInterval)
	n := min(a.minFree, len(a.free))
	for _, c := range a.free[:n] {
		releaseArena(a.mem[int(c)*arenaChunk : int(c+1)*arenaChunk])
	}
	a.cold = append(a.cold, a.free[:n]...)
	a.free = a.free[:copy(a.free, a.free[n:])]
	a.minFree = len(a.free)
}

// close unmaps the region if no buffered span is in it.
func (a *spanArena) close() {
	if a.mem != nil && a.live == 0 {
		unmapArena(a.mem)
		*a = spanArena{reserve: a.reserve, cur: -1, failed: true}
	}
}
