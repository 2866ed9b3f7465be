package archive

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"
)

// CompactResult is what compacting one partition did.
type CompactResult struct {
	Partition   string
	FilesBefore int
	FilesAfter  int
	BytesBefore int64
	BytesAfter  int64
	Rows        int // rows written
	Duplicates  int // rows dropped: same trace_id and span_id as a row kept
	Skipped     string
}

// Compact merges the files of one finished partition into large files
// sorted by trace and start time, dropping duplicate spans (the same
// trace_id and span_id, which at-least-once delivery can archive twice).
// The files of both forms of the partition (hour=6 and the zero-padded
// hour=06 of older archives) are merged together into part.Prefix, the
// unpadded form, so the hour's spans end up once, in one place.
//
// Rows are merged, not loaded: every row group is already sorted by
// trace_id, so a k-way merge streams them with a few thousand rows per row
// group in memory.
//
// The switch is atomic for readers of a local archive: the new files are
// built in a hidden directory beside the partition, which is then exchanged
// with it in one rename (renameat2 RENAME_EXCHANGE), so a reader lists
// either the old files or the new ones. Object storage has no such rename:
// there the new files are uploaded first and the old ones deleted after, so
// a reader may briefly see both (never neither); DISTINCT trace_id, span_id
// reads are unaffected. Files under the padded form are deleted after the
// switch, so there too a reader may briefly see both.
func Compact(ctx context.Context, st Store, part Partition, targetBytes int64, node string) (CompactResult, error) {
	res := CompactResult{Partition: part.String(), FilesBefore: len(part.Keys)}
	prefixes := part.Prefixes
	if len(prefixes) == 0 {
		prefixes = []string{part.Prefix}
	}
	var inputs []Object
	var inputKeys []string
	for _, prefix := range prefixes {
		objs, err := st.List(ctx, prefix)
		if err != nil {
			return res, err
		}
		for _, o := range objs {
			if strings.HasSuffix(o.Key, ".parquet") && !strings.Contains(strings.TrimPrefix(o.Key, prefix), "/") {
				inputs = append(inputs, o)
				inputKeys = append(inputKeys, o.Key)
				res.BytesBefore += o.Size
			}
		}
	}
	res.FilesBefore = len(inputs)
	if len(inputs) == 0 || isCompact(part.Prefix, inputKeys) {
		res.Skipped = "already compact"
		return res, nil
	}
	if targetBytes <= 0 {
		targetBytes = 512 << 20
	}

	staging, err := os.MkdirTemp("", "tailsift-compact-*")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(staging)
	outputs, err := mergeFiles(ctx, st, inputs, staging, targetBytes, node, &res)
	if err != nil {
		return res, err
	}
	res.FilesAfter = len(outputs)
	for _, f := range outputs {
		if fi, err := os.Stat(f); err == nil {
			res.BytesAfter += fi.Size()
		}
	}
	if ds, ok := st.(*dirStore); ok {
		var here, padded []string
		for _, k := range inputKeys {
			if strings.HasPrefix(k, part.Prefix) {
				here = append(here, k)
			} else {
				padded = append(padded, k)
			}
		}
		if err := ds.swapPartition(part.Prefix, outputs, here); err != nil {
			return res, err
		}
		return res, st.Delete(ctx, padded...)
	}
	for _, f := range outputs {
		if err := st.Put(ctx, part.Prefix+filepath.Base(f), f); err != nil {
			return res, fmt.Errorf("uploading %s: %w", filepath.Base(f), err)
		}
	}
	return res, st.Delete(ctx, inputKeys...)
}

// swapPartition exchanges the partition directory with one holding the
// compacted files plus any file that appeared since compaction listed it.
// A partition directory that does not exist yet (its files were all under
// the padded form) is created by the same rename.
func (d *dirStore) swapPartition(prefix string, outputs, oldKeys []string) error {
	dir := filepath.Join(d.dir, filepath.FromSlash(strings.TrimSuffix(prefix, "/")))
	next := filepath.Join(filepath.Dir(dir), "."+filepath.Base(dir)+".compact")
	os.RemoveAll(next)
	if err := os.MkdirAll(next, 0o755); err != nil {
		return err
	}
	for _, f := range outputs {
		if err := moveFile(f, filepath.Join(next, filepath.Base(f))); err != nil {
			return err
		}
	}
	// Files written into the partition after it was listed stay.
	old := map[string]bool{}
	for _, k := range oldKeys {
		old[path.Base(k)] = true
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := syncDir(next); err != nil {
			return err
		}
		if err := os.Rename(next, dir); err != nil {
			return err
		}
		return syncDir(filepath.Dir(dir))
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !old[e.Name()] && !strings.HasPrefix(e.Name(), ".") {
			if err := os.Link(filepath.Join(dir, e.Name()), filepath.Join(next, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := syncDir(next); err != nil {
		return err
	}
	if err := exchangeDirs(next, dir); err != nil {
		return fmt.Errorf("exchanging %s with its compacted version: %w", dir, err)
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return err
	}
	return os.RemoveAll(next) // now the old files
}

func moveFile(src, dst string) error {
	if err := os.Rename(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// cursor reads one sorted row group.
type cursor struct {
	r    *parquet.GenericReader[Row]
	buf  []Row
	i, n int
	done bool
}

func (c *cursor) head() *Row { return &c.buf[c.i] }

func (c *cursor) next() error {
	c.i++
	if c.i < c.n {
		return nil
	}
	clear(c.buf[:c.n])
	n, err := c.r.Read(c.buf)
	c.i, c.n = 0, n
	if n == 0 {
		c.done = true
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return err
}

type cursorHeap []*cursor

func (h cursorHeap) Len() int { return len(h) }
func (h cursorHeap) Less(i, j int) bool {
	a, b := h[i].head(), h[j].head()
	return cmp.Or(strings.Compare(a.TraceID, b.TraceID), cmp.Compare(a.StartTimeUnixNano, b.StartTimeUnixNano)) < 0
}
func (h cursorHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *cursorHeap) Push(x any)   { *h = append(*h, x.(*cursor)) }
func (h *cursorHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}

// mergeFiles k-way merges every row group of inputs into new files in dir.
func mergeFiles(ctx context.Context, st Store, inputs []Object, dir string, target int64, node string, res *CompactResult) ([]string, error) {
	var h cursorHeap
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	for _, o := range inputs {
		ra, closer, err := st.Open(ctx, o.Key)
		if err != nil {
			return nil, err
		}
		closers = append(closers, closer)
		f, err := parquet.OpenFile(ra, o.Size)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o.Key, err)
		}
		for _, rg := range f.RowGroups() {
			c := &cursor{r: parquet.NewGenericRowGroupReader[Row](rg), buf: make([]Row, 512)}
			closers = append(closers, c.r)
			c.i = -1
			if err := c.next(); err != nil {
				return nil, fmt.Errorf("%s: %w", o.Key, err)
			}
			if !c.done {
				h = append(h, c)
			}
		}
	}
	heap.Init(&h)

	w := &Writer{cfg: Config{RowGroupBytes: 128 << 20, RollBytes: target, NodeID: "compact-" + node}, m: NewMetrics(nil),
		files: map[string]*openFile{}, now: time.Now}
	w.cfg.setDefaults()
	w.log = w.cfg.Logger
	w.dir = dir
	var outputs []string
	var cur *openFile
	var trace []Row // rows of the current trace, in merge order
	var dedup traceDedup
	finish := func() error {
		if cur == nil {
			return nil
		}
		path := cur.path
		cur.pending = nil
		if err := w.close(cur); err != nil {
			return err
		}
		outputs = append(outputs, path)
		cur = nil
		return nil
	}
	// flushTrace writes the current trace's rows, each span once. Files
	// roll only between traces: a trace stays in one file.
	flushTrace := func() error {
		if len(trace) == 0 {
			return nil
		}
		if cur != nil && cur.size+cur.rows.size >= target {
			if err := finish(); err != nil {
				return err
			}
		}
		keep := dedup.pick(trace)
		for i := range trace {
			if !keep[i] {
				res.Duplicates++
				continue
			}
			if cur == nil {
				var err error
				if cur, err = w.openIn(dir, ""); err != nil {
					return err
				}
			}
			cur.rows.appendRow(&trace[i])
			res.Rows++
			if cur.rows.full(w.cfg.RowGroupBytes) {
				if err := w.flushRowGroup(cur); err != nil {
					return err
				}
			}
		}
		clear(trace)
		trace = trace[:0]
		return nil
	}
	for h.Len() > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c := h[0]
		if len(trace) > 0 && c.head().TraceID != trace[0].TraceID {
			if err := flushTrace(); err != nil {
				return nil, err
			}
		}
		trace = append(trace, *c.head())
		if err := c.next(); err != nil {
			return nil, err
		}
		if c.done {
			heap.Pop(&h)
		} else {
			heap.Fix(&h, 0)
		}
	}
	if err := flushTrace(); err != nil {
		return nil, err
	}
	return outputs, finish()
}

// traceDedup chooses which of a trace's rows compaction keeps: one per
// span ID. A span archived twice was usually decided twice, whole both
// times (a record read again after a rebalance or a crash); but after a
// crash the second decision can be on a piece of the trace, with the
// piece's own trace columns (trace_span_count, trace_duration_ns,
// keep_reason, ...). Of the copies of a span, the row of the decision
// that covered the most spans of the trace is kept (the earliest such
// decision on a tie), so that a trace's rows agree on its trace columns
// whenever one decision saw the whole trace.
type traceDedup struct {
	keep  []bool
	first map[string]int            // span ID -> index of the row kept
	spans map[int64]map[string]bool // decided_at -> span IDs of that decision
}

// pick returns, for each row of one trace in order, whether to keep it.
// The slice is reused by the next call.
func (d *traceDedup) pick(rows []Row) []bool {
	if cap(d.keep) < len(rows) {
		d.keep = make([]bool, len(rows))
	}
	d.keep = d.keep[:len(rows)]
	clear(d.keep)
	// clear costs a map's capacity, not its length: a map that held a
	// large trace is dropped, or every later trace would pay for it.
	if d.first == nil || len(d.first) > 1024 {
		d.first = map[string]int{}
	}
	clear(d.first)
	dup := false
	for i := range rows {
		if _, ok := d.first[rows[i].SpanID]; ok {
			dup = true
			continue
		}
		d.first[rows[i].SpanID] = i
		d.keep[i] = true
	}
	if !dup {
		return d.keep
	}
	// Duplicates: count each decision's distinct spans, take the best.
	if d.spans == nil {
		d.spans = map[int64]map[string]bool{}
	}
	clear(d.spans)
	for i := range rows {
		m := d.spans[rows[i].DecidedAt]
		if m == nil {
			m = map[string]bool{}
			d.spans[rows[i].DecidedAt] = m
		}
		m[rows[i].SpanID] = true
	}
	bestAt, bestSpans := int64(0), -1
	for at, m := range d.spans {
		if len(m) > bestSpans || len(m) == bestSpans && at < bestAt {
			bestAt, bestSpans = at, len(m)
		}
	}
	// Keep the best decision's first row of each span it has, else the
	// span's first row.
	clear(d.first)
	for i := range rows {
		d.keep[i] = false
		if rows[i].DecidedAt == bestAt {
			if _, ok := d.first[rows[i].SpanID]; !ok {
				d.first[rows[i].SpanID] = i
			}
		}
	}
	for i := range rows {
		if _, ok := d.first[rows[i].SpanID]; !ok {
			d.first[rows[i].SpanID] = i
		}
	}
	for _, i := range d.first {
		d.keep[i] = true
	}
	return d.keep
}
