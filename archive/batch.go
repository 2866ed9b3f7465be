package archive

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/parquet-go/parquet-go"
	"github.com/tailsift/tailsift/internal/otlpwire"
)

// rowBatch holds the rows of one row group, decoded but not yet encoded, in
// flat slices that are reused from row group to row group and file to file:
// every string a row holds is a ref into one byte arena, every attribute
// list a range of kvs. Filling and writing it allocates nothing once its
// slices have grown, where a []Row held maps and strings of its own for
// every span and went through parquet-go's reflection to be written.
//
// Rows are written straight into the Parquet writer's column buffers
// (writeTo), in the order sortRows puts them in, with the schema of the Row
// struct and the values, levels and map order parquet-go gives a Row: a
// file is byte for byte what parquet.GenericWriter[Row] writes from the
// same rows (TestColumnsMatchRowWriter checks it).
type rowBatch struct {
	arena  []byte
	spans  []spanRow
	kvs    []kv // span, event and link attributes, each list sorted by key
	events []eventRow
	links  []linkRow
	traces []traceRow

	keys  []sortKey                   // for sortRows
	order []int32                     // row indexes in the order they are written
	cols  [numColumns][]parquet.Value // each column's values of a chunk of rows

	size int64 // estimated uncompressed size of the rows (rowSize)

	// invalidUTF8 counts the strings whose invalid UTF-8 was replaced (see
	// add); it is not reset with the rows.
	invalidUTF8 int64
}

// ref is a string in a rowBatch's arena.
type ref struct{ off, n uint32 }

// kv is an attribute whose key and value are in the arena.
type kv struct{ key, val ref }

// span32 is a range of indexes, into kvs, events or links.
type span32 struct{ lo, hi uint32 }

func (s span32) len() int { return int(s.hi - s.lo) }

// spanRow is one row: a span's own columns, its scope's, and its trace's.
type spanRow struct {
	scope *scopeRow
	trace uint32 // index into traces

	traceID, spanID, parentID, traceState ref
	name, kind, status, statusMessage     ref

	start, end, startMicros, duration int64

	promoted   [numPromoted]ref // valid where has has the slot's bit
	httpStatus int64            // valid where has has hasHTTPStatus
	has        uint16

	attrs, events, links span32
}

const hasHTTPStatus = 1 << numPromoted

type eventRow struct {
	time  int64
	name  ref
	attrs span32
}

type linkRow struct {
	traceID, spanID, traceState ref
	attrs                       span32
}

// traceRow holds the trace-level columns, shared by the rows of a trace.
type traceRow struct {
	rootService, rootName, reason ref
	durationNs, spanCount         int64
	decidedAt                     int64 // microseconds
	sampleRate                    float64
	hasError, late                bool
}

// scopeRow is what every span of one resource and instrumentation scope
// shares: decoded once per sampler.Scope (see rowBuilder), or once per row
// for rows read back by compaction.
type scopeRow struct {
	service, scopeName, scopeVersion []byte
	res                              []kvBytes // sorted by key, redacted
	resSize                          int       // rowSize's share of res
	promote                          []promotion

	// resValues are the values of the resource_attributes columns (keys,
	// values) for every span of the scope, made when first written.
	resValues *[2][]parquet.Value
}

type kvBytes struct{ key, val []byte }

// promotion is a resource attribute that fills a promoted column of spans
// that do not set it themselves.
type promotion struct {
	slot uint8
	val  []byte
}

func (b *rowBatch) len() int { return len(b.spans) }

// full reports whether the rows make a row group: limit bytes of rowSize,
// or an arena near what a ref can address (row groups of gigabytes).
func (b *rowBatch) full(limit int64) bool { return b.size >= limit || len(b.arena) >= maxArenaBytes }

const maxArenaBytes = 1 << 31

func (b *rowBatch) reset() {
	b.arena = b.arena[:0]
	b.spans = b.spans[:0]
	b.kvs = b.kvs[:0]
	b.events = b.events[:0]
	b.links = b.links[:0]
	b.traces = b.traces[:0]
	b.order = b.order[:0]
	b.size = 0
}

// mark is a rowBatch's length, to roll back a trace that failed to decode.
type mark struct{ arena, spans, kvs, events, links, traces int }

func (b *rowBatch) mark() mark {
	return mark{len(b.arena), len(b.spans), len(b.kvs), len(b.events), len(b.links), len(b.traces)}
}

func (b *rowBatch) rollback(m mark) {
	b.arena, b.spans, b.kvs = b.arena[:m.arena], b.spans[:m.spans], b.kvs[:m.kvs]
	b.events, b.links, b.traces = b.events[:m.events], b.links[:m.links], b.traces[:m.traces]
}

func (b *rowBatch) str(r ref) []byte { return b.arena[r.off : r.off+r.n : r.off+r.n] }

// add stores v in the arena, each byte of it that is not valid UTF-8
// replaced by U+FFFD. Parquet's STRING columns hold UTF-8, and readers
// check it: DuckDB refuses a whole file for one invalid byte, so a glob
// query over the archive would fail. OTLP producers do not all guarantee
// valid UTF-8, so every string of a row is stored through add or addString.
func (b *rowBatch) add(v []byte) ref {
	off := len(b.arena)
	if utf8.Valid(v) {
		b.arena = append(b.arena, v...)
	} else {
		b.invalidUTF8++
		b.arena = otlpwire.AppendValidUTF8(b.arena, v)
	}
	return b.refFrom(off)
}

func (b *rowBatch) addString(v string) ref {
	if !utf8.ValidString(v) {
		return b.add([]byte(v))
	}
	off := len(b.arena)
	b.arena = append(b.arena, v...)
	return b.refFrom(off)
}

// validText returns v, or a copy of it repaired as add repairs, for the
// strings of a scope, which live outside the arena.
func (b *rowBatch) validText(v []byte) []byte {
	if utf8.Valid(v) {
		return v
	}
	b.invalidUTF8++
	return otlpwire.AppendValidUTF8(nil, v)
}

// refFrom is the ref of what was appended to the arena since off.
func (b *rowBatch) refFrom(off int) ref {
	if len(b.arena) > 1<<32-1 {
		// Writers cut a row group once the arena reaches maxArenaBytes.
		panic(fmt.Sprintf("BUG: archive row group of %d bytes", len(b.arena)))
	}
	return ref{uint32(off), uint32(len(b.arena) - off)}
}

// sortKVs sorts the attributes in kvs[lo:] by key, keeping only the last of
// duplicate keys, as a map would, and returns their range: parquet-go
// writes a map's entries in key order.
func (b *rowBatch) sortKVs(lo int) span32 {
	s := b.kvs[lo:]
	slices.SortStableFunc(s, func(x, y kv) int { return bytes.Compare(b.str(x.key), b.str(y.key)) })
	n := 0
	for i := range s {
		if i+1 < len(s) && bytes.Equal(b.str(s[i].key), b.str(s[i+1].key)) {
			continue
		}
		s[n] = s[i]
		n++
	}
	b.kvs = b.kvs[:lo+n]
	return span32{uint32(lo), uint32(lo + n)}
}

// kvSize is rowSize's share of a list of attributes.
func (b *rowBatch) kvSize(s span32) int {
	n := 0
	for _, a := range b.kvs[s.lo:s.hi] {
		n += int(a.key.n+a.val.n) + 8
	}
	return n
}

// rowSize estimates a row's uncompressed size, for cutting row groups and
// rolling files by size.
func (b *rowBatch) rowSize(r *spanRow) int64 {
	n := 200 + int(r.traceID.n+r.spanID.n+r.parentID.n+r.traceState.n+r.name.n+r.statusMessage.n)
	n += b.kvSize(r.attrs) + r.scope.resSize
	for _, e := range b.events[r.events.lo:r.events.hi] {
		n += 16 + int(e.name.n) + b.kvSize(e.attrs)
	}
	n += r.links.len() * 80
	return int64(n)
}

// sortRows orders the rows by trace and start time, so a trace's spans sit
// together and row-group statistics and the bloom filter prune well. It
// sorts small keys, not rows: the first eight hex digits of the trace ID
// decide most comparisons without reading the arena.
func (b *rowBatch) sortRows() {
	keys := b.keys[:0]
	for i := range b.spans {
		r := &b.spans[i]
		var prefix [8]byte // hex digits are never 0: a shorter ID sorts first
		copy(prefix[:], b.str(r.traceID))
		keys = append(keys, sortKey{prefix: binary.BigEndian.Uint64(prefix[:]), start: r.start, row: int32(i)})
	}
	slices.SortFunc(keys, func(x, y sortKey) int {
		if x.prefix != y.prefix {
			return cmp.Compare(x.prefix, y.prefix)
		}
		return cmp.Or(bytes.Compare(b.str(b.spans[x.row].traceID), b.str(b.spans[y.row].traceID)), cmp.Compare(x.start, y.start))
	})
	b.order = b.order[:0]
	for _, k := range keys {
		b.order = append(b.order, k.row)
	}
	b.keys = keys
}

type sortKey struct {
	prefix uint64
	start  int64
	row    int32
}

// rowsPerWrite is how many rows go to every column before the next: a
// column cuts a page only between writes, once its buffer reaches the page
// size, as parquet-go's own row writers do in chunks of 64 rows.
const rowsPerWrite = 64

// writeTo writes the rows, in sortRows' order, into the columns of the row
// group w is writing.
func (b *rowBatch) writeTo(w *parquet.Writer) error {
	cols := w.ColumnWriters()
	if len(cols) != numColumns {
		return fmt.Errorf("BUG: archive schema has %d columns, the row writer %d", len(cols), numColumns)
	}
	for lo := 0; lo < len(b.order); lo += rowsPerWrite {
		for c := range b.cols {
			b.cols[c] = b.cols[c][:0]
		}
		for _, i := range b.order[lo:min(lo+rowsPerWrite, len(b.order))] {
			b.appendValues(&b.cols, i)
		}
		for c, vals := range b.cols {
			if _, err := cols[c].WriteRowValues(vals); err != nil {
				return err
			}
		}
	}
	for c := range b.cols {
		clear(b.cols[c][:cap(b.cols[c])]) // drop references to the arena
	}
	return nil
}
