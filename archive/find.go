package archive

import (
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
	Rows          int // rows decoded
}

// PartitionPrefixes returns the partition prefixes ("dt=…/hour=…/") that
// can hold traces started between from and to, newest first.
func PartitionPrefixes(from, to time.Time) []string {
	var out []string
	for t := to.UTC().Truncate(time.Hour); !t.Before(from.UTC().Truncate(time.Hour)); t = t.Add(-time.Hour) {
		out = append(out, fmt.Sprintf("dt=%s/hour=%02d/", t.Format("2006-01-02"), t.Hour()))
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
// the page index on trace_id (rows are sorted by it) points at the pages to
// decode.
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
	f, err := parquet.OpenFile(ra, o.Size, parquet.SkipPageIndex(true), parquet.SkipBloomFilters(false))
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
		found, n, err := scanRowGroup(rg, first, traceID)
		stats.Rows += n
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

// scanRowGroup reads rows from first while trace_id ≤ id (rows are sorted by
// trace_id within a row group) and returns those of id.
func scanRowGroup(rg parquet.RowGroup, first int64, id string) ([]Row, int, error) {
	r := parquet.NewGenericRowGroupReader[Row](rg)
	defer r.Close()
	if err := r.SeekToRow(first); err != nil {
		return nil, 0, err
	}
	var out []Row
	buf := make([]Row, 256)
	read := 0
	for {
		n, err := r.Read(buf)
		read += n
		for _, row := range buf[:n] {
			switch {
			case row.TraceID == id:
				out = append(out, row)
			case row.TraceID > id:
				return out, read, nil
			}
		}
		if errors.Is(err, io.EOF) {
			return out, read, nil
		}
		if err != nil {
			return out, read, err
		}
	}
}
