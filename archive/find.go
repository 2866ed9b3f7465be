package archive

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"
)

// FindStats tells how much of the archive a lookup touched.
type FindStats struct {
	Files         int // files in the partitions searched
	FilesOpened   int // files whose footer was read
	RowGroups     int // row groups in the opened files
	RowGroupsRead int // row groups whose rows were read (bloom filter hit)
	Rows          int // trace_id values read to find the trace's rows
}

// PartitionPrefixes returns the partition prefixes ("dt=…/hour=…/") that
// can hold traces started between from and to, newest first. An hour
// before 10 has two: its own and the zero-padded one of older archives,
// which stays until compaction moves its files.
func PartitionPrefixes(from, to time.Time) []string {
	var out []string
	for t := to.UTC().Truncate(time.Hour); !t.Before(from.UTC().Truncate(time.Hour)); t = t.Add(-time.Hour) {
		out = append(out, partitionDir(t)+"/")
		if padded := paddedDir(t); padded != partitionDir(t) {
			out = append(out, padded+"/")
		}
	}
	return out
}

// ParseTraceID checks a trace ID as users paste it: 32 hex digits.
func ParseTraceID(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) != 32 {
		return "", fmt.Errorf("trace ID %q: want 32 hex digits", s)
	}
	var b [16]byte
	if _, err := hex.Decode(b[:], []byte(s)); err != nil {
		return "", fmt.Errorf("trace ID %q: %w", s, err)
	}
	return s, nil
}

// FindTrace returns every archived row of one trace, sorted by start time,
// from the files under prefixes (all files when prefixes is empty).
//
// It reads as little as the layout allows: partition names prune by time;
// each file's footer gives per-row-group bloom filters on trace_id, which
// rule out almost every row group; in a row group that may hold the trace,
// the page index on trace_id (rows are sorted by it) points at the page to
// start from, only trace_id values are decoded until the trace's rows are
// found, and then only those rows, each column seeking straight to the
// page that holds them through its offset index.
func FindTrace(ctx context.Context, st Store, traceID string, prefixes []string) ([]Row, FindStats, error) {
	var stats FindStats
	if len(prefixes) == 0 {
		prefixes = []string{""}
	}
	var rows []Row
	for _, prefix := range prefixes {
		objs, err := st.List(ctx, prefix)
		if err != nil {
			return nil, stats, err
		}
		for _, o := range objs {
			if !strings.HasSuffix(o.Key, ".parquet") {
				continue
			}
			stats.Files++
			found, err := findInFile(ctx, st, o, traceID, &stats)
			if err != nil {
				return nil, stats, fmt.Errorf("%s: %w", o.Key, err)
			}
			rows = append(rows, found...)
		}
	}
	slices.SortFunc(rows, func(a, b Row) int { return int(a.StartTimeUnixNano - b.StartTimeUnixNano) })
	return rows, stats, nil
}

func findInFile(ctx context.Context, st Store, o Object, traceID string, stats *FindStats) ([]Row, error) {
	ra, closer, err := st.Open(ctx, o.Key)
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	// The page index (two contiguous reads) lets every column seek to the
	// trace's rows; without it each column decodes every page before them.
	f, err := parquet.OpenFile(ra, o.Size, parquet.SkipBloomFilters(false))
	if err != nil {
		return nil, err
	}
	stats.FilesOpened++
	col, ok := f.Schema().Lookup("trace_id")
	if !ok {
		return nil, errors.New("no trace_id column")
	}
	want := parquet.ValueOf(traceID)
	var out []Row
	for _, rg := range f.RowGroups() {
		stats.RowGroups++
		chunk := rg.ColumnChunks()[col.ColumnIndex]
		if bf := chunk.BloomFilter(); bf != nil {
			if ok, err := bf.Check(want); err == nil && !ok {
				continue
			}
		}
		stats.RowGroupsRead++
		first := int64(0)
		if ci, err := chunk.ColumnIndex(); err == nil {
			if oi, err := chunk.OffsetIndex(); err == nil {
				first = firstCandidateRow(ci, oi, traceID)
				if first < 0 {
					continue
				}
			}
		}
		start, end, n, err := locate(chunk, first, traceID)
		stats.Rows += n
		if err != nil {
			return nil, err
		}
		found, err := readRowRange(rg, start, end)
		if err != nil {
			return nil, err
		}
		out = append(out, found...)
	}
	return out, nil
}

// firstCandidateRow returns the first row of the first page whose trace_id
// range may contain id, or -1 when none may.
func firstCandidateRow(ci parquet.ColumnIndex, oi parquet.OffsetIndex, id string) int64 {
	for p := 0; p < ci.NumPages(); p++ {
		minV, maxV := string(ci.MinValue(p).ByteArray()), string(ci.MaxValue(p).ByteArray())
		if id < minV[:min(len(minV), len(id))] {
			return -1 // sorted: later pages start even higher
		}
		if id[:min(len(maxV), len(id))] <= maxV {
			return oi.FirstRowIndex(p)
		}
	}
	return -1
}

// locate reads the trace_id column alone, from row first on, and returns
// the rows [start, end) that hold id (rows are sorted by trace_id within a
// row group), and how many values it read. Only then are whole rows
// decoded: decoding every column of the candidate pages' rows, maps and
// all, cost ten times more than finding the few rows wanted.
func locate(chunk parquet.ColumnChunk, first int64, id string) (start, end int64, read int, err error) {
	pages := chunk.Pages()
	defer pages.Close()
	if err := pages.SeekToRow(first); err != nil {
		return 0, 0, 0, err
	}
	want := []byte(id)
	vals := make([]parquet.Value, 512)
	row, start := first, int64(-1)
	// found returns the rows of id seen before row, none if none was.
	found := func() (int64, int64) {
		if start < 0 {
			return row, row
		}
		return start, row
	}
	for {
		p, err := pages.ReadPage()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, 0, read, err
		}
		vr := p.Values()
		for {
			n, err := vr.ReadValues(vals)
			for _, v := range vals[:n] {
				read++
				switch c := bytes.Compare(v.ByteArray(), want); {
				case c == 0 && start < 0:
					start = row
				case c > 0:
					parquet.Release(p)
					start, end := found()
					return start, end, read, nil
				}
				row++
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				parquet.Release(p)
				return 0, 0, read, err
			}
		}
		parquet.Release(p)
	}
	start, end = found()
	return start, end, read, nil
}

// readRowRange decodes the rows [start, end) of a row group.
func readRowRange(rg parquet.RowGroup, start, end int64) ([]Row, error) {
	if start >= end {
		return nil, nil
	}
	r := parquet.NewGenericRowGroupReader[Row](rg)
	defer r.Close()
	if err := r.SeekToRow(start); err != nil {
		return nil, err
	}
	out := make([]Row, end-start)
	for got := 0; got < len(out); {
		n, err := r.Read(out[got:])
		got += n
		if errors.Is(err, io.EOF) && got < len(out) {
			return nil, fmt.Errorf("row group ended at row %d, before row %d", start+int64(got), end)
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
	}
	return out, nil
}
