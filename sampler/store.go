package sampler

import (
	"encoding/binary"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
)

// spanRecord is a buffered span in its shard's arena, followed there by
// its encoded bytes. It holds no Go pointers (see spanArena), and only
// 32-bit fields, so records and bytes pack at 4-byte alignment.
type spanRecord struct {
	start, end [2]uint32 // Span.Start, Span.End, low half first
	next       [2]uint32 // the trace's next span (a spanRef), 0 for the last
	nFlags     uint32    // length of the encoded bytes that follow (bigLen if larger), then Span.Flags in the top byte
	scope      uint32    // index in the shard's scope table
	src        uint32    // index in the shard's input unit table
	timesAt    uint32    // with flagNoTimes, where in the bytes the time fields were
}

// bigLen in spanRecord.nFlags means the span's length is its chunk's (a
// span this large has a chunk of its own, see spanArena.alloc).
const bigLen = 1<<24 - 1

const recordSize = int(unsafe.Sizeof(spanRecord{}))

func recordAt(b []byte) *spanRecord { return (*spanRecord)(unsafe.Pointer(unsafe.SliceData(b))) }

func split64(v uint64) [2]uint32 { return [2]uint32{uint32(v), uint32(v >> 32)} }
func join64(h [2]uint32) uint64  { return uint64(h[0]) | uint64(h[1])<<32 }

// ptrTable gives the pointers that buffered spans share (scopes, input
// units) small indexes, so span records need not hold pointers, and keeps
// each alive while a buffered span refers to it. Index 0 is nil.
type ptrTable[T any] struct {
	items  []*T
	refs   []int32
	unused []uint32
	index  map[*T]uint32
	last   *T // most spans in a row share a pointer: it skips the map
	lastI  uint32
}

// ref returns p's index, counting one more reference.
func (t *ptrTable[T]) ref(p *T) uint32 {
	if p == nil {
		return 0
	}
	if p != t.last {
		i, ok := t.index[p]
		if !ok {
			if t.index == nil {
				t.index = make(map[*T]uint32)
				t.items, t.refs = append(t.items, nil), append(t.refs, 0)
			}
			if k := len(t.unused); k > 0 {
				i = t.unused[k-1]
				t.unused = t.unused[:k-1]
				t.items[i] = p
			} else {
				i = uint32(len(t.items))
				t.items, t.refs = append(t.items, p), append(t.refs, 0)
			}
			t.index[p] = i
		}
		t.last, t.lastI = p, i
	}
	t.refs[t.lastI]++
	return t.lastI
}

func (t *ptrTable[T]) get(i uint32) *T {
	if i == 0 {
		return nil
	}
	return t.items[i]
}

// unref drops one reference to index i.
func (t *ptrTable[T]) unref(i uint32) {
	if i == 0 {
		return
	}
	if t.refs[i]--; t.refs[i] > 0 {
		return
	}
	p := t.items[i]
	delete(t.index, p)
	if t.last == p {
		t.last = nil
	}
	t.items[i] = nil
	t.unused = append(t.unused, i)
}

// traceIDField is the length of a span's trace_id field: tag, length and
// the 16-byte ID.
const traceIDField = 2 + 16

// traceIDAt tells where raw holds a trace_id field with id, the trace's
// ID, which the trace's entry already holds, so that 18 of the about 260
// bytes of a typical span need not be buffered: flagNoTraceID if the field
// comes first (encoders that write fields in number order, as
// protobuf-go), that and flagTraceIDLast if it comes last (pdata, so the
// OpenTelemetry Collector, writes them in reverse), 0 otherwise.
func traceIDAt(raw []byte, id *TraceID) uint8 {
	if len(raw) < traceIDField {
		return 0
	}
	if isTraceIDField(raw[:traceIDField], id) {
		return flagNoTraceID
	}
	if isTraceIDField(raw[len(raw)-traceIDField:], id) {
		return flagNoTraceID | flagTraceIDLast
	}
	return 0
}

// isTraceIDField reports whether f, traceIDField bytes, is the trace_id
// field (1, length-delimited, 16 bytes) holding id.
func isTraceIDField(f []byte, id *TraceID) bool {
	return f[0] == 0x0a && f[1] == 16 && string(f[2:traceIDField]) == string(id[:])
}

// appendTraceIDField appends the trace_id field holding id, as
// isTraceIDField matches it.
func appendTraceIDField(dst []byte, id *TraceID) []byte {
	return protowire.AppendBytes(protowire.AppendTag(dst, fieldSpanTraceID, protowire.BytesType), id[:])
}

// flagNoTraceID marks, in Span.Flags, a span read from the arena whose
// bytes were stored without their trace_id field, first or, with
// flagTraceIDLast, last; ownSpans puts it back and clears the flags.
// Policies read such bytes as they are: no field they look at is missing.
const (
	flagNoTraceID   uint8 = 1 << 7
	flagTraceIDLast uint8 = 1 << 6
)

// timesField is the length of a span's start and end time fields, side by
// side: a one-byte tag and 8 bytes each.
const timesField = 2 * (1 + 8)

// Tags of the time fields (fixed64 start_time_unix_nano = 7,
// end_time_unix_nano = 8).
const (
	tagStart = 7<<3 | 1
	tagEnd   = 8<<3 | 1
)

// timesIn tells whether raw holds, at at, the start and end time fields with
// exactly start and end: 0 if not, flagNoTimes if start comes first, that
// and flagEndFirst if end does. Only then may the 18 bytes be left out and
// written again from the record (appendTimes).
func timesIn(raw []byte, at int, start, end int64) uint8 {
	if at < 0 || at > len(raw)-timesField {
		return 0
	}
	f := raw[at : at+timesField]
	a, b := binary.LittleEndian.Uint64(f[1:9]), binary.LittleEndian.Uint64(f[10:])
	switch {
	case f[0] == tagStart && f[9] == tagEnd && a == uint64(start) && b == uint64(end):
		return flagNoTimes
	case f[0] == tagEnd && f[9] == tagStart && a == uint64(end) && b == uint64(start):
		return flagNoTimes | flagEndFirst
	}
	return 0
}

// appendTimes appends the time fields that timesIn found, in their order.
func appendTimes(dst []byte, s *Span) []byte {
	first, second := tagStart, tagEnd
	v1, v2 := uint64(s.Start), uint64(s.End)
	if s.Flags&flagEndFirst != 0 {
		first, second, v1, v2 = tagEnd, tagStart, v2, v1
	}
	dst = binary.LittleEndian.AppendUint64(append(dst, byte(first)), v1)
	return binary.LittleEndian.AppendUint64(append(dst, byte(second)), v2)
}

// flagNoTimes marks, in Span.Flags, a span read from the arena whose bytes
// were stored without their time fields (at Span.TimesAt-1, start first,
// or end first with flagEndFirst), which the record holds anyway; ownSpans
// puts them back. Policies read such bytes as they are: they take the times
// from Span.Start and Span.End.
const (
	flagNoTimes  uint8 = 1 << 5
	flagEndFirst uint8 = 1 << 4
)

// store copies s into the arena, as the span after tail (0 for the first)
// of trace id, and returns its reference. The bytes are stored without
// their trace_id field where traceIDAt finds it, and without their time
// fields where the scanner found them (Span.TimesAt) holding Start and End:
// 36 of the about 260 bytes of a typical span. ownSpans puts them back.
func (sh *shard) store(s *Span, id *TraceID, tail spanRef) spanRef {
	raw, flags := s.Raw, s.Flags
	timesAt := int(s.TimesAt) - 1
	switch at := traceIDAt(raw, id); at {
	case flagNoTraceID:
		raw, flags = raw[traceIDField:], flags|at
		timesAt -= traceIDField
	case flagNoTraceID | flagTraceIDLast:
		raw, flags = raw[:len(raw)-traceIDField], flags|at
	}
	n := len(raw)
	if tf := timesIn(raw, timesAt, s.Start, s.End); tf != 0 {
		n -= timesField
		flags |= tf
	} else {
		timesAt = 0
	}
	ref, room := sh.arena.alloc(recordSize + n)
	*recordAt(room) = spanRecord{
		start: split64(uint64(s.Start)), end: split64(uint64(s.End)),
		nFlags: uint32(min(n, bigLen)) | uint32(flags)<<24,
		scope:  sh.scopes.ref(s.Scope), src: sh.srcs.ref(s.Src),
		timesAt: uint32(timesAt),
	}
	if flags&flagNoTimes != 0 {
		copy(room[recordSize+copy(room[recordSize:], raw[:timesAt]):], raw[timesAt+timesField:])
	} else {
		copy(room[recordSize:], raw)
	}
	if tail != 0 {
		recordAt(sh.arena.at(tail)).next = split64(uint64(ref))
	}
	return ref
}

// spansOf appends b's buffered spans to dst, in arrival order. Their Raw
// points into the arena: valid until dropSpans, on the shard goroutine.
func (sh *shard) spansOf(b *buffered, dst []Span) []Span {
	for r := b.head; r != 0; {
		room := sh.arena.at(r)
		rec := recordAt(room)
		n := len(room)
		if l := int(rec.nFlags & bigLen); l != bigLen {
			n = recordSize + l
		}
		sp := Span{
			Raw: room[recordSize:n:n], Scope: sh.scopes.get(rec.scope), Src: sh.srcs.get(rec.src),
			Start: int64(join64(rec.start)), End: int64(join64(rec.end)), Flags: uint8(rec.nFlags >> 24),
		}
		if sp.Flags&flagNoTimes != 0 {
			sp.TimesAt = uint16(rec.timesAt + 1)
		}
		dst = append(dst, sp)
		r = spanRef(join64(rec.next))
	}
	return dst
}

// decideBatch is how many complete traces expire reads ahead of deciding
// them (see loadSpans). A variable for the benchmark that compares it with
// reading one trace at a time.
var decideBatch = 16

// loadSpans reads the span records of bs into the cache, walking their
// lists side by side. A trace is decided seconds after its spans were
// stored, when their records are long out of every cache, and each record
// holds the reference to the next: walked one trace at a time, every span
// is a wait on memory that cannot start before the previous one ends.
// Walked side by side, the next records of different traces are
// independent loads that the processor overlaps. Deciding the traces then
// finds their records in the cache (BenchmarkExpire).
func (sh *shard) loadSpans(bs []*buffered) {
	if len(bs) < 2 {
		return
	}
	var cur [64]spanRef
	refs := cur[:min(len(bs), len(cur))]
	for i := range refs {
		refs[i] = bs[i].head
	}
	for more := true; more; {
		more = false
		for i, r := range refs {
			if r != 0 {
				refs[i] = spanRef(join64(recordAt(sh.arena.at(r)).next))
				more = true
			}
		}
	}
}

// addAhead is how many spans of a batch readAhead reads ahead of adding
// them. A variable for the benchmark that compares it with none.
var addAhead = 16

// readAhead is called before adding batch[i], for each i in turn. At every
// addAhead-th span it loads what adding that span and the next ones will
// read first: each span's slot in the trace table's index, its trace's
// entry, and that trace's last span record, which add links the new span
// to; for a span of no buffered trace, its slot in the dropped decisions.
// Adding spans one at a time, each of those is a wait on memory that cannot
// start until the span before is added (a draining node buffers a million
// spans of a hundred thousand traces, far beyond any cache); read ahead for
// several spans of different traces, they are independent loads that the
// processor overlaps. readAhead is small enough to inline, so the spans in
// between cost no call.
func (sh *shard) readAhead(batch []Item, i int) {
	if addAhead > 1 && i%addAhead == 0 {
		sh.loadAhead(batch[i:min(i+addAhead, len(batch))])
	}
}

// loadAhead does readAhead's loads for items.
func (sh *shard) loadAhead(items []Item) {
	var sum uint64
	for j := range items {
		id := &items[j].TraceID
		if b := sh.traces.first(id); b != nil {
			if b.tail != 0 {
				sum += uint64(sh.arena.at(b.tail)[0])
			}
		} else {
			sum += sh.cache.dropped.homeKey(cacheKey(*id))
		}
	}
	sh.aheadSum += sum // so the loads are not optimised away
}

// dropSpans frees b's buffered spans.
func (sh *shard) dropSpans(b *buffered) {
	for r := b.head; r != 0; {
		rec := recordAt(sh.arena.at(r))
		next := spanRef(join64(rec.next))
		sh.scopes.unref(rec.scope)
		sh.srcs.unref(rec.src)
		sh.arena.release(r)
		r = next
	}
	b.head, b.tail = 0, 0
}

// ownSpans gives spans of trace id leaving the shard heap copies of their
// bytes, in one allocation, whole again: spans stored without their
// trace_id field (flagNoTraceID) or their time fields (flagNoTimes) get
// them back where they were.
func ownSpans(spans []Span, id *TraceID) {
	n := 0
	for i := range spans {
		n += len(spans[i].Raw)
		if spans[i].Flags&flagNoTraceID != 0 {
			n += traceIDField
		}
		if spans[i].Flags&flagNoTimes != 0 {
			n += timesField
		}
	}
	buf := make([]byte, 0, n)
	for i := range spans {
		s := &spans[i]
		off := len(buf)
		f := s.Flags
		if f&(flagNoTraceID|flagTraceIDLast) == flagNoTraceID {
			buf = appendTraceIDField(buf, id)
		}
		if f&flagNoTimes != 0 {
			at := int(s.TimesAt) - 1
			buf = append(appendTimes(append(buf, s.Raw[:at]...), s), s.Raw[at:]...)
		} else {
			buf = append(buf, s.Raw...)
		}
		if f&flagTraceIDLast != 0 {
			buf = appendTraceIDField(buf, id)
		}
		s.Flags = f &^ (flagNoTraceID | flagTraceIDLast | flagNoTimes | flagEndFirst)
		s.TimesAt = 0
		s.Raw = buf[off:len(buf):len(buf)]
	}
}
