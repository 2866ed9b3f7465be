// Command archivestat summarizes a tailsift archive for cluster runs: how
// many traces and spans it holds, how many traces were decided in more
// than one place (split: their on-time spans carry different decision
// times), how many span rows are duplicates (what at-least-once delivery
// costs before compaction), and the traces by keep reason.
//
//	go run ./bench/archivestat -archive file:///tmp/archive
//	go run ./bench/archivestat -archive s3://traces/tailsift -s3-endpoint http://127.0.0.1:7070 -s3-path-style
//
// It reads every Parquet file with parquet-go, so it needs no DuckDB.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/parquet-go/parquet-go"
	"github.com/tailsift/tailsift/archive"
)

// row is the part of archive.Row this summary reads.
type row struct {
	TraceID    string `parquet:"trace_id"`
	SpanID     string `parquet:"span_id"`
	HasError   bool   `parquet:"trace_has_error"`
	KeepReason string `parquet:"keep_reason"`
	DecidedAt  int64  `parquet:"decided_at,timestamp(microsecond:utc)"`
	Late       bool   `parquet:"late"`
}

type trace struct {
	spans     map[string]struct{}
	decisions map[int64]struct{} // decision times of on-time spans
	reason    string
	hasError  bool
}

func main() {
	url := flag.String("archive", "", "archive location: file:///path or s3://bucket/prefix")
	endpoint := flag.String("s3-endpoint", "", "S3 endpoint override")
	region := flag.String("s3-region", "us-east-1", "S3 region")
	pathStyle := flag.Bool("s3-path-style", false, "address the bucket in the path")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "archivestat: -archive is required")
		os.Exit(2)
	}
	if err := run(context.Background(), *url, archive.S3Config{Endpoint: *endpoint, Region: *region, PathStyle: *pathStyle}); err != nil {
		fmt.Fprintln(os.Stderr, "archivestat:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, url string, s3c archive.S3Config) error {
	st, err := archive.OpenStore(ctx, url, s3c)
	if err != nil {
		return err
	}
	objs, err := st.List(ctx, "")
	if err != nil {
		return err
	}
	traces := map[string]*trace{}
	files, rows := 0, 0
	for _, o := range objs {
		if !strings.HasSuffix(o.Key, ".parquet") {
			continue
		}
		n, err := readFile(ctx, st, o, traces)
		if err != nil {
			return fmt.Errorf("%s: %w", o.Key, err)
		}
		files++
		rows += n
	}
	spans, split, errTraces := 0, 0, 0
	reasons := map[string]int{}
	for _, t := range traces {
		spans += len(t.spans)
		if len(t.decisions) > 1 {
			split++
		}
		if t.hasError {
			errTraces++
		}
		reasons[t.reason]++
	}
	fmt.Printf("archive %s: %d files, %d rows\n", st, files, rows)
	fmt.Printf("traces %d, with errors %d, distinct spans %d, duplicate rows %d (%.2f%%)\n",
		len(traces), errTraces, spans, rows-spans, 100*float64(rows-spans)/float64(max(rows, 1)))
	fmt.Printf("split traces (decided in more than one place) %d (%.3f%% of traces)\n",
		split, 100*float64(split)/float64(max(len(traces), 1)))
	keys := make([]string, 0, len(reasons))
	for r := range reasons {
		keys = append(keys, r)
	}
	slices.SortFunc(keys, func(a, b string) int { return reasons[b] - reasons[a] })
	fmt.Print("traces by keep_reason:")
	for _, r := range keys {
		fmt.Printf(" %s=%d", r, reasons[r])
	}
	fmt.Println()
	return nil
}

func readFile(ctx context.Context, st archive.Store, o archive.Object, traces map[string]*trace) (int, error) {
	ra, closer, err := st.Open(ctx, o.Key)
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	f, err := parquet.OpenFile(ra, o.Size)
	if err != nil {
		return 0, err
	}
	r := parquet.NewGenericReader[row](f)
	defer r.Close()
	buf := make([]row, 1024)
	total := 0
	for {
		n, err := r.Read(buf)
		for _, x := range buf[:n] {
			t := traces[x.TraceID]
			if t == nil {
				t = &trace{spans: map[string]struct{}{}, decisions: map[int64]struct{}{}}
				traces[x.TraceID] = t
			}
			t.spans[x.SpanID] = struct{}{}
			if !x.Late {
				t.decisions[x.DecidedAt] = struct{}{}
			}
			t.reason = x.KeepReason
			t.hasError = t.hasError || x.HasError
		}
		total += n
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}
