package archive

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"
	"github.com/tailsift/tailsift/internal/buildinfo"
	"github.com/tailsift/tailsift/sampler"
)

// Writer writes kept traces to Parquet files. Run owns all its state: one
// goroutine, no locks.
type Writer struct {
	cfg   Config
	loc   location
	dir   string // where files are written: the archive (file://) or the spool (s3://)
	m     *Metrics
	log   *slog.Logger
	files map[string]*openFile // by partition, e.g. "dt=2026-11-23/hour=6"
	rb    *rowBuilder
	chunk *rowBatch // rows of held traces being written (writeHeld)

	rowsPerRaw float64   // bytes of rows per encoded span byte, of the last row group written
	up         *uploader // nil for file://
	now        func() time.Time

	partHour time.Time // the hour of the last trace added,
	part     string    // and its partition

	full     bool      // the spool is at its cap: in is not read
	lastWarn time.Time // of the spool-nearly-full warning

	seal   chan chan error // Seal's requests, served by Run
	recent recentSpans     // kept spans taken lately, to drop copies

	// spares are the row buffers of closed files, emptied, for the next
	// files. Only compaction fills them (a row group of 128 MiB of rows, too
	// much to grow again from nothing for every output file); the node's
	// own files hold their traces encoded (writeHeld). (Parquet writers are
	// not reused: parquet-go v0.32's Writer.Reset loses the columns'
	// path_in_schema from the next file's footer.)
	spares []*rowBatch
}

// maxSpares bounds Writer.spares: about the files a node has open at once
// (the hour's, and the last hour's while its late spans arrive).
const maxSpares = 2

// openFile is a Parquet file being written. Its name starts with a dot and
// ends in .tmp until it is complete, so readers globbing *.parquet (and
// Spark, which skips dot files) never see a partial file.
type openFile struct {
	part      string
	tmp, path string
	f         *os.File
	w         *parquet.Writer
	held      []*sampler.Kept // the traces of the current row group, decoded when it is written
	heldRaw   int64           // encoded bytes of their spans
	rows      *rowBatch       // compaction's current row group, sorted when flushed
	size      int64           // estimated uncompressed size written to w
	spans     int
	opened    time.Time
	pending   []*sampler.Pending // settled once the file is durable
}

// New checks that the archive location is usable and returns a Writer.
// For file:// the directory is created if needed and must be writable.
func New(ctx context.Context, cfg Config, m *Metrics) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	loc, _ := parseURL(cfg.URL)
	if m == nil {
		m = NewMetrics(nil)
	}
	w := &Writer{cfg: cfg, loc: loc, m: m, log: cfg.Logger, files: make(map[string]*openFile), now: time.Now,
		seal: make(chan chan error)}
	red, err := NewRedaction(cfg.Redact, cfg.RedactKey)
	if err != nil {
		return nil, err
	}
	w.rb = newRowBuilder(red, m)
	var store *s3Store
	switch loc.scheme {
	case "file":
		w.dir = loc.dir
	case "s3":
		if cfg.SpoolDir == "" {
			cfg.SpoolDir = filepath.Join(os.TempDir(), "tailsift-spool-"+cfg.NodeID)
		}
		w.dir = cfg.SpoolDir
		if store, err = newS3Store(ctx, loc, cfg.S3); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(w.dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", w.dir, err)
	}
	probe, err := os.CreateTemp(w.dir, ".probe-*")
	if err != nil {
		return nil, fmt.Errorf("%s is not writable: %w", w.dir, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	if err := removeIncomplete(w.dir, w.cfg.NodeID, w.log); err != nil {
		return nil, err
	}
	if store != nil {
		if w.up, err = newUploader(store, w.dir, m, w.log); err != nil {
			return nil, err
		}
		m.spoolMaxBytes.Set(float64(cfg.SpoolMaxBytes))
	}
	return w, nil
}

// removeIncomplete deletes files a crash of this node left half-written.
// Their spans were never settled, so Kafka delivers them again. Only this
// node's files: nodes of a cluster may share one directory, and another
// node's .tmp file is one it is writing now.
func removeIncomplete(dir, node string, log *slog.Logger) error {
	matches, err := filepath.Glob(filepath.Join(dir, "dt=*", "hour=*", ".part-*.tmp"))
	if err != nil {
		return err
	}
	for _, p := range matches {
		if !ownFile(filepath.Base(p), node) {
			continue
		}
		log.Info("removing incomplete archive file left by a previous run", "path", p)
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// Run writes every trace received on in, until in is closed; then it closes
// all open files durably and, for object storage, uploads the spool. If ctx
// ends first (the shutdown grace period ran out) it closes what it can and
// returns. A write error is returned: the node stops, and the spans of
// unfinished files, never settled, are read again from Kafka after restart.
func (w *Writer) Run(ctx context.Context, in <-chan *sampler.Kept) error {
	upDone := make(chan error, 1)
	upCtx, stopUp := context.WithCancel(ctx)
	defer stopUp()
	if w.up != nil {
		go func() { upDone <- w.up.run(upCtx) }()
	} else {
		upDone <- nil
	}
	every := min(w.cfg.RollAge/4, time.Second)
	tick := time.NewTicker(every)
	defer tick.Stop()
	var err error
loop:
	for {
		take := in
		if w.spoolFull() {
			take = nil // backpressure: the sampler, then the Kafka poll, wait
		}
		select {
		case k, ok := <-take:
			if !ok {
				break loop
			}
			if err = w.add(k); err != nil {
				break loop
			}
		case <-tick.C:
			if err = w.rollAged(); err != nil {
				break loop
			}
			if err = w.relieve(); err != nil {
				break loop
			}
		case done := <-w.seal:
			err = w.closeAll()
			done <- err
			if err != nil {
				break loop
			}
		case <-ctx.Done():
			err = ctx.Err()
			break loop
		}
	}
	if cerr := w.closeAll(); err == nil {
		err = cerr
	}
	if w.up != nil {
		w.up.finish() // upload what is spooled, then return
	}
	if uerr := <-upDone; err == nil && uerr != nil && !errors.Is(uerr, context.Canceled) {
		err = uerr
	}
	return err
}

// spoolFull reports whether the spool is at its cap, keeps the spool
// gauges current, and warns (at most once a minute) when it nears the cap.
func (w *Writer) spoolFull() bool {
	if w.up == nil {
		return false
	}
	b, limit := w.up.spooledBytes(), w.cfg.SpoolMaxBytes
	ratio := float64(b) / float64(limit)
	w.m.spoolUsage.Set(ratio)
	full := b >= limit
	switch {
	case full && !w.full:
		w.m.spoolFull.Set(1)
		w.m.spoolPaused.Inc()
		w.log.Warn("archive spool full: taking no decided traces until uploads make room; their records wait in Kafka, "+
			"unsettled. Check that the object store is reachable, or raise archive.spool_max_bytes",
			"spool_dir", w.dir, "spool_bytes", b, "spool_max_bytes", limit)
	case !full && w.full:
		w.m.spoolFull.Set(0)
		w.log.Info("archive spool has room again; taking decided traces", "spool_bytes", b, "spool_max_bytes", limit)
	case !full && ratio >= spoolWarnRatio && w.now().Sub(w.lastWarn) >= time.Minute:
		w.lastWarn = w.now()
		w.log.Warn("archive spool nearly full: uploads are not keeping up (is the object store reachable?); "+
			"at the cap the node stops taking decided traces", "spool_dir", w.dir, "spool_bytes", b,
			"spool_max_bytes", limit, "usage", fmt.Sprintf("%.0f%%", 100*ratio))
	}
	w.full = full
	return full
}

// spoolWarnRatio is the spool usage from which the writer warns.
const spoolWarnRatio = 0.8

// partitionOf returns the Hive partition of a trace: the hour its first span
// started, in UTC. A start time that is unset or absurd (more than a day
// ahead of the decision, or before 2000) falls back to the decision time, so
// a bad clock cannot scatter files over decades.
func (w *Writer) partitionOf(k *sampler.Kept) string {
	t := k.DecidedAt
	if k.Start > 946684800e9 && k.Start < k.DecidedAt.Add(24*time.Hour).UnixNano() {
		t = time.Unix(0, k.Start)
	}
	t = t.UTC().Truncate(time.Hour)
	if !t.Equal(w.partHour) || w.part == "" { // most traces start in the hour of the one before
		w.partHour = t
		w.part = partitionDir(t)
	}
	return w.part
}

func (w *Writer) add(k *sampler.Kept) error {
	if copies := w.dropCopies(k); len(copies) > 0 {
		w.settleWithOpenFiles(copies)
	}
	if len(k.Spans) == 0 {
		return nil
	}
	part := w.partitionOf(k)
	f := w.files[part]
	if f == nil {
		var err error
		if f, err = w.open(part); err != nil {
			return err
		}
		w.files[part] = f
	}
	f.held = append(f.held, k)
	var raw int64
	for i := range k.Spans {
		raw += int64(len(k.Spans[i].Raw))
		if src := k.Spans[i].Src; src != nil {
			f.pending = append(f.pending, src)
		}
	}
	f.heldRaw += raw
	// Held until its row group is written, and then decoded into rows
	// beside the spans: both count against the node's memory bound.
	k.Hold(k.Held() + w.estimate(raw))
	f.spans += len(k.Spans)
	if w.estimate(f.heldRaw) >= w.cfg.RowGroupBytes {
		if err := w.flushRowGroup(f); err != nil {
			return err
		}
	}
	if f.size+w.estimate(f.heldRaw) >= w.cfg.RollBytes {
		return w.close(f)
	}
	return nil
}

// Row groups are sized in bytes of rows (rowBatch.size), but the spans of a
// row group wait encoded until it is written: their size in rows is
// estimated from their encoded size, at the ratio of the last row group
// written (clamped), or defaultRowsPerRaw before the first. Generated
// traffic makes 2.2 bytes of rows per encoded byte: resource attributes are
// repeated in every row, IDs are written in hex.
const (
	defaultRowsPerRaw            = 2.2
	minRowsPerRaw, maxRowsPerRaw = 1.0, 16.0
)

// estimate is the size in rows of held spans of raw encoded bytes.
func (w *Writer) estimate(raw int64) int64 {
	r := w.rowsPerRaw
	if r == 0 {
		r = defaultRowsPerRaw
	}
	return int64(float64(raw) * r)
}

func (w *Writer) open(part string) (*openFile, error) {
	return w.openIn(filepath.Join(w.dir, filepath.FromSlash(part)), part)
}

// openIn starts a file in dir; part is its key in w.files.
func (w *Writer) openIn(dir, part string) (*openFile, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		w.m.errors.WithLabelValues("write").Inc()
		return nil, fmt.Errorf("archive: %w", err)
	}
	now := w.now()
	name := fileName(w.cfg.NodeID, now)
	f := &openFile{
		part:   part,
		path:   filepath.Join(dir, name),
		tmp:    filepath.Join(dir, "."+name+".tmp"),
		opened: now,
	}
	var err error
	if f.f, err = os.OpenFile(f.tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err != nil {
		w.m.errors.WithLabelValues("write").Inc()
		return nil, fmt.Errorf("archive: %w", err)
	}
	w.m.openFiles.Inc()
	if n := len(w.spares); n > 0 {
		f.rows, w.spares = w.spares[n-1], w.spares[:n-1]
	} else {
		f.rows = new(rowBatch)
	}
	f.w = parquet.NewWriter(f.f, writerOptions()...)
	return f, nil
}

// writerOptions are the Parquet writer settings of every archive file.
// footerVersion and footerBuild name this build in every file's created_by.
var footerVersion, footerBuild = buildinfo.Get().Footer()

func writerOptions() []parquet.WriterOption {
	opts := []parquet.WriterOption{
		rowSchema,
		parquet.Compression(zstdCodec),
		// A dictionary-encoded column whose values turn out not to repeat
		// (URLs with IDs in span attributes) switches to PLAIN once its
		// dictionary reaches 1 MiB, as parquet-mr does, instead of growing
		// without bound.
		parquet.DictionaryMaxBytes(1 << 20),
		// 10 bits per value: about 1% false positives, 1.25 bytes per span.
		parquet.BloomFilters(parquet.SplitBlockFilter(10, "trace_id")),
		// 128 KiB pages: about 4,000 trace IDs per page, so the page index
		// on the sorted trace_id column narrows a lookup to a few pages.
		parquet.PageBufferSize(128 << 10),
		// Keep whole trace IDs as page bounds: truncated ones prune less.
		parquet.ColumnIndexSizeLimit(func(path []string) int { return 64 }),
		parquet.CreatedBy("tailsift", footerVersion, footerBuild),
		parquet.KeyValueMetadata("tailsift.schema", "1"),
	}
	// Bounds of attribute keys and values, random IDs and free text prune
	// nothing, and computing them for every page (for the page header and
	// again for the page index) was a tenth of writing a file: those
	// columns get none.
	for _, path := range noBounds {
		opts = append(opts, parquet.SkipPageBounds(path...), parquet.SkipPageStatistics(path...))
	}
	return opts
}

// noBounds are the columns written without page bounds (see writerOptions).
var noBounds = [][]string{
	{"span_id"}, {"parent_span_id"}, {"trace_state"}, {"status_message"},
	{"attributes", "key_value", "key"}, {"attributes", "key_value", "value"},
	{"resource_attributes", "key_value", "key"}, {"resource_attributes", "key_value", "value"},
	{"events", "list", "element", "name"},
	{"events", "list", "element", "attributes", "key_value", "key"},
	{"events", "list", "element", "attributes", "key_value", "value"},
	{"links", "list", "element", "trace_id"}, {"links", "list", "element", "span_id"},
	{"links", "list", "element", "trace_state"},
	{"links", "list", "element", "attributes", "key_value", "key"},
	{"links", "list", "element", "attributes", "key_value", "value"},
}

// zstdCodec compresses every page of every file. One for all files: each
// zstd encoder it pools allocates several megabytes of tables.
var zstdCodec = &zstd.Codec{Level: zstd.SpeedDefault}

// ownFile reports whether base, a temporary file name, was made by
// fileName for node: ".part-" node "-" time "-" suffix ".parquet.tmp".
// The time is checked so that node "a" does not claim node "a-1"'s files.
func ownFile(base, node string) bool {
	rest, ok := strings.CutPrefix(base, ".part-"+node+"-")
	const layout = "20060102T150405.000Z"
	if !ok || len(rest) <= len(layout) || rest[len(layout)] != '-' {
		return false
	}
	_, err := time.Parse(layout, rest[:len(layout)])
	return err == nil
}

// fileName is unique across nodes (node ID), restarts (time) and files
// opened in the same millisecond (random suffix).
func fileName(node string, t time.Time) string {
	var rnd [4]byte
	rand.Read(rnd[:])
	return fmt.Sprintf("part-%s-%s-%s.parquet", node, t.UTC().Format("20060102T150405.000Z"), hex.EncodeToString(rnd[:]))
}

// flushRowGroup writes f's pending rows as a row group: the held traces
// (see writeHeld), or for compaction the rows already decoded into f.rows,
// sorted by trace and start time.
func (w *Writer) flushRowGroup(f *openFile) error {
	switch {
	case len(f.held) > 0:
		if err := w.writeHeld(f); err != nil {
			return err
		}
	case f.rows.len() > 0:
		if err := w.writeRows(f, f.rows); err != nil {
			return err
		}
		f.size += f.rows.size
		f.rows.reset()
	default:
		return nil
	}
	if err := f.w.Flush(); err != nil {
		w.m.errors.WithLabelValues("write").Inc()
		return fmt.Errorf("archive: writing %s: %w", f.tmp, err)
	}
	return nil
}

// writeRows sorts rows by trace and start time and writes them into f's
// current row group.
func (w *Writer) writeRows(f *openFile, rows *rowBatch) error {
	rows.sortRows()
	if err := rows.writeTo(f.w); err != nil {
		w.m.errors.WithLabelValues("write").Inc()
		return fmt.Errorf("archive: writing %s: %w", f.tmp, err)
	}
	return nil
}

// chunkRows is about how many rows writeHeld decodes before it writes them:
// few enough that the decoded rows are still in the processor's cache when
// their values are gathered into the columns.
const chunkRows = 512

// writeHeld writes f's held traces into the row group being written, in
// trace ID order (the order of the rows' hex trace IDs), decoding them a
// chunk at a time into one small rowBatch. A row group is thus held as the
// kept spans' encoded bytes, about half the memory of its decoded rows, and
// the rows are written while still in the cache, where decoding a whole row
// group first left a buffer of tens of megabytes to grow, fault in and read
// back cold. Traces with the same ID (late spans of a kept trace) are kept
// in one chunk, so every trace's rows are still sorted by start time.
func (w *Writer) writeHeld(f *openFile) error {
	held := f.held
	slices.SortStableFunc(held, func(a, b *sampler.Kept) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	if w.chunk == nil {
		w.chunk = new(rowBatch)
	}
	rows := w.chunk
	defer rows.reset()
	var size int64
	for i := 0; i < len(held); {
		j := i
		for j < len(held) && (j == i || rows.len() < chunkRows || held[j].ID == held[j-1].ID) {
			if err := w.rb.appendTrace(rows, held[j]); err != nil {
				w.m.errors.WithLabelValues("decode").Inc()
				return fmt.Errorf("archive: trace %x: %w", held[j].ID, err)
			}
			j++
		}
		if err := w.writeRows(f, rows); err != nil {
			return err
		}
		size += rows.size
		rows.reset()
		i = j
	}
	if size > 0 && f.heldRaw > 0 {
		w.rowsPerRaw = min(max(float64(size)/float64(f.heldRaw), minRowsPerRaw), maxRowsPerRaw)
	}
	f.size += size
	for _, k := range held {
		k.Hold(0)
	}
	clear(held) // the spans' bytes are free to go
	f.held, f.heldRaw = held[:0], 0
	return nil
}

// close makes f durable — footer written, fsynced, renamed into place,
// directory synced — and only then settles its spans.
func (w *Writer) close(f *openFile) error {
	delete(w.files, f.part)
	w.m.openFiles.Dec()
	err := w.flushRowGroup(f)
	if err == nil && len(w.spares) < maxSpares {
		w.spares, f.rows = append(w.spares, f.rows), nil // emptied by flushRowGroup
	}
	if err == nil {
		err = f.w.Close()
	}
	if err == nil {
		err = f.f.Sync()
	}
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.tmp, f.path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(f.path))
	}
	if err != nil {
		w.m.errors.WithLabelValues("write").Inc()
		os.Remove(f.tmp)
		return fmt.Errorf("archive: closing %s: %w", f.path, err)
	}
	var size int64
	if st, err := os.Stat(f.path); err == nil {
		size = st.Size()
	}
	w.m.files.Inc()
	w.m.spans.Add(float64(f.spans))
	w.m.bytes.Add(float64(size))
	w.m.lastFile.SetToCurrentTime()
	w.log.Info("archive file written", "path", f.path, "spans", f.spans, "bytes", size)
	for _, p := range f.pending {
		p.Done()
	}
	f.pending = nil
	if w.up != nil {
		w.up.enqueue(f.path)
	}
	return nil
}

// relieve writes the traces held by every open file as a row group when
// the node is at its memory bound (Config.Pressure).
func (w *Writer) relieve() error {
	if w.cfg.Pressure == nil || !w.cfg.Pressure() {
		return nil
	}
	for _, f := range w.files {
		if len(f.held) > 0 {
			if err := w.flushRowGroup(f); err != nil {
				return err
			}
		}
	}
	return nil
}

// Seal closes every open file now, whatever its age, and returns once
// their spans are durable (in the archive, or in the spool for object
// storage) and settled. A node calls it before Kafka partitions move to
// another reader: records whose kept spans wait in an open file would
// otherwise stay uncommitted for up to roll_age and be read, and archived,
// a second time there. It returns ctx.Err() if Run is not serving.
func (w *Writer) Seal(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case w.seal <- done:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *Writer) rollAged() error {
	now := w.now()
	for _, f := range w.files {
		if now.Sub(f.opened) >= w.cfg.RollAge {
			if err := w.close(f); err != nil {
				return err
			}
		}
	}
	return nil
}

// closeAll closes every open file; it tries them all and returns the first
// error.
func (w *Writer) closeAll() error {
	var first error
	for _, f := range w.files {
		if err := w.close(f); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
