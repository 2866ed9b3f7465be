// Command archive builds an archive of at least a million spans the way a
// node writes it, and measures it: bytes per span on disk against the OTLP
// protobuf of the same spans, DuckDB scan speed for typical analyst queries,
// and trace lookups as `tailsift trace` does them, before and after
// compaction.
//
// Generated traffic (bench/gen) goes through the router's scanner and the
// sampler with the node's default policy (every error trace, every trace of
// 2s or more, 5% of the rest), in simulated time, into the archive Writer.
// The traffic is cut into chunks five simulated minutes apart, each written
// by its own Writer, so the archive holds one file per partition per five
// minutes, as a node that rolls files every five minutes (archive.roll_age)
// leaves it.
//
//	go run ./bench/archive                    # >= 1,000,000 archived spans
//	go run ./bench/archive -spans 200000 -keep /tmp/arch
package main

import (
	"context"
	"database/sql"
	"encoding/hex"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"
	"github.com/klauspost/compress/zstd"
	"github.com/parquet-go/parquet-go"
	"github.com/tailsift/tailsift/archive"
	"github.com/tailsift/tailsift/bench/gen"
	"github.com/tailsift/tailsift/router"
	"github.com/tailsift/tailsift/sampler"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/archive:", err)
		os.Exit(1)
	}
}

type simClock struct{ ns atomic.Int64 }

func (c *simClock) Now() time.Time { return time.Unix(0, c.ns.Load()) }

// tally is what went into the archive, counted on the way in.
type tally struct {
	spans, traces   int
	spanBytes       int64 // encoded Span messages of the archived spans
	otlpBytes       int64 // OTLP messages generated (all spans)
	otlpZstdBytes   int64 // the same, zstd-compressed per message batch
	generatedSpans  int
	generatedTraces int
	ids             [][16]byte // a reservoir of archived trace IDs
	seen            int
}

func run() error {
	target := flag.Int("spans", 1_000_000, "archive at least this many spans")
	perChunk := flag.Int("chunk-traces", 20_000, "generated traces per five-minute chunk")
	keep := flag.String("keep", "", "build the archive in this directory and keep it (default: a temporary directory)")
	reps := flag.Int("reps", 3, "runs of each DuckDB query (the best and median are reported)")
	lookups := flag.Int("lookups", 8, "random trace IDs to look up")
	seed := flag.Int64("seed", 1, "generator seed")
	flag.Parse()

	dir := *keep
	if dir == "" {
		d, err := os.MkdirTemp("", "tailsift-bench-archive-*")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	fmt.Printf("archive: %s\nGOMAXPROCS %d, %s\n\n", dir, runtime.GOMAXPROCS(0), runtime.Version())

	ctx := context.Background()
	var t tally
	r := rand.New(rand.NewPCG(uint64(*seed), 7))
	built := time.Now()
	base := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	for chunk := 0; t.spans < *target; chunk++ {
		start := base.Add(time.Duration(chunk) * 5 * time.Minute)
		if err := writeChunk(ctx, dir, start, gen.Config{Seed: *seed*1000 + int64(chunk), Traces: *perChunk, Start: start}, &t, r); err != nil {
			return err
		}
	}
	fmt.Printf("built in %v: generated %d spans of %d traces; archived %d spans of %d traces\n",
		time.Since(built).Round(time.Second), t.generatedSpans, t.generatedTraces, t.spans, t.traces)

	if err := reportSize(dir, &t); err != nil {
		return err
	}
	if err := reportQueries(dir, t.spans, *reps); err != nil {
		return err
	}
	st, err := archive.OpenStore(ctx, "file://"+dir, archive.S3Config{})
	if err != nil {
		return err
	}
	ids := t.ids
	if len(ids) > *lookups {
		ids = ids[:*lookups]
	}
	fmt.Println("\nlookups as `tailsift trace <id> --archive file://DIR` does them (archive.FindTrace):")
	if err := reportLookups(ctx, st, ids, r); err != nil {
		return err
	}
	parts, err := archive.Partitions(ctx, st)
	if err != nil {
		return err
	}
	began := time.Now()
	for _, p := range parts {
		if _, err := archive.Compact(ctx, st, p, 0, "bench"); err != nil {
			return fmt.Errorf("compacting %s: %w", p.Prefix, err)
		}
	}
	fmt.Printf("\ncompacted %d partitions in %v (`tailsift compact`)\n", len(parts), time.Since(began).Round(time.Millisecond))
	if err := reportSize(dir, &t); err != nil {
		return err
	}
	fmt.Println("\nlookups after compaction:")
	return reportLookups(ctx, st, ids, r)
}

// writeChunk generates one chunk of traffic and runs it through the
// scanner, a sampler and a Writer, in simulated time starting at start.
func writeChunk(ctx context.Context, dir string, start time.Time, gc gen.Config, t *tally, r *rand.Rand) error {
	var msgs [][]byte
	enc, _ := zstd.NewWriter(nil)
	var batch []byte
	truth, err := gen.Generate(gc, func(b []byte) error {
		msgs = append(msgs, b)
		t.otlpBytes += int64(len(b))
		// Compressed as a Kafka producer batches it: about 1 MiB at a time.
		batch = append(batch, b...)
		if len(batch) >= 1<<20 {
			t.otlpZstdBytes += int64(len(enc.EncodeAll(batch, nil)))
			batch = batch[:0]
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(batch) > 0 {
		t.otlpZstdBytes += int64(len(enc.EncodeAll(batch, nil)))
	}
	t.generatedSpans += truth.Spans
	t.generatedTraces += truth.Traces

	clock := &simClock{}
	clock.ns.Store(start.UnixNano())
	cfg := sampler.Config{Shards: 2, QuietPeriod: 3 * time.Second, MaxWait: 30 * time.Second, TickInterval: time.Second,
		InputClock: clock, DecisionCacheSize: 1 << 16}
	if err := cfg.Validate(); err != nil {
		return err
	}
	out := make(chan *sampler.Kept, 1024)
	s := sampler.New(cfg, sampler.DefaultPolicy(), out, nil, clock)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	sdone := make(chan error, 1)
	go func() { sdone <- s.Run(sctx) }()

	w, err := archive.New(ctx, archive.Config{URL: "file://" + dir, NodeID: "bench"}, nil)
	if err != nil {
		return err
	}
	in := make(chan *sampler.Kept, 1024)
	wdone := make(chan error, 1)
	go func() { wdone <- w.Run(ctx, in) }()
	go func() {
		defer close(in)
		for k := range out {
			t.traces++
			t.spans += len(k.Spans)
			for i := range k.Spans {
				t.spanBytes += int64(len(k.Spans[i].Raw))
			}
			// Reservoir-sample trace IDs for lookups.
			t.seen++
			if len(t.ids) < 64 {
				t.ids = append(t.ids, k.ID)
			} else if j := r.IntN(t.seen); j < 64 {
				t.ids[j] = k.ID
			}
			in <- k
		}
	}()

	// Roots start about 1 ms apart; messages arrive spread over the same
	// stretch of simulated time, and every 50 ms the shards decide what is
	// complete, as their ticker would.
	span := time.Duration(gc.Traces) * time.Millisecond
	sc, _ := router.NewScanner("")
	const tick = 50 * time.Millisecond
	last := start
	for j, m := range msgs {
		at := start.Add(span * time.Duration(j) / time.Duration(len(msgs)))
		for at.Sub(last) >= tick {
			last = last.Add(tick)
			clock.ns.Store(last.UnixNano())
			if err := s.Expire(ctx); err != nil {
				return err
			}
		}
		clock.ns.Store(at.UnixNano())
		src := &sampler.Pending{TS: at.UnixNano()}
		items, err := sc.Scan(m, src)
		if err != nil {
			return err
		}
		src.Add(len(items))
		if err := s.Add(ctx, slices.Clone(items)); err != nil {
			return err
		}
	}
	// Let every trace complete: past the quiet period and max wait.
	for range 31 {
		clock.ns.Add(int64(time.Second))
		if err := s.Expire(ctx); err != nil {
			return err
		}
	}
	if err := s.Flush(ctx); err != nil {
		return err
	}
	stop()
	if err := <-sdone; err != nil {
		return err
	}
	return <-wdone
}

// reportSize prints bytes per span on disk, against the OTLP protobuf of
// the same spans, and which columns take the space.
func reportSize(dir string, t *tally) error {
	var files []string
	var disk int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".parquet") {
			files = append(files, p)
			info, err := d.Info()
			if err != nil {
				return err
			}
			disk += info.Size()
		}
		return nil
	})
	if err != nil {
		return err
	}
	cols := map[string]int64{}
	var rowGroups int
	var rows int64
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		info, _ := f.Stat()
		pf, err := parquet.OpenFile(f, info.Size(), parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true))
		if err != nil {
			f.Close()
			return fmt.Errorf("%s: %w", p, err)
		}
		md := pf.Metadata()
		rows += md.NumRows
		for _, rg := range md.RowGroups {
			rowGroups++
			for _, c := range rg.Columns {
				cols[c.MetaData.PathInSchema[0]] += c.MetaData.TotalCompressedSize
			}
		}
		f.Close()
	}
	n := float64(t.spans)
	fmt.Printf("\nfiles %d, row groups %d, rows %d, %d bytes on disk\n", len(files), rowGroups, rows, disk)
	fmt.Printf("bytes per span: parquet %.1f | OTLP protobuf: bare Span messages %.1f, as exported (with resources, %d spans/message) %.1f, exported and zstd-compressed %.1f\n",
		float64(disk)/n, float64(t.spanBytes)/n, gen.Config{}.WithDefaults().SpansPerMessage, float64(t.otlpBytes)/float64(t.generatedSpans), float64(t.otlpZstdBytes)/float64(t.generatedSpans))
	type col struct {
		name  string
		bytes int64
	}
	var cs []col
	for k, v := range cols {
		cs = append(cs, col{k, v})
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].bytes > cs[j].bytes })
	fmt.Print("bytes per span by column (compressed):")
	for i, c := range cs {
		if i == 12 {
			break
		}
		fmt.Printf(" %s %.2f;", c.name, float64(c.bytes)/n)
	}
	fmt.Println()
	return nil
}

// reportQueries times typical analyst queries with DuckDB over the archive.
func reportQueries(dir string, spans, reps int) error {
	db, err := sql.Open("duckdb", "")
	if err != nil {
		return err
	}
	defer db.Close()
	var threads string
	if err := db.QueryRow(`SELECT current_setting('threads')::VARCHAR`).Scan(&threads); err != nil {
		return err
	}
	from := fmt.Sprintf("read_parquet('%s/**/*.parquet', hive_partitioning = true)", dir)
	queries := []struct{ name, q string }{
		{"count(*)", `SELECT count(*) FROM ` + from},
		{"spans by service and hour", `SELECT service_name, dt, hour, count(*) FROM ` + from + ` GROUP BY ALL`},
		{"p99 duration per route (SERVER spans)", `SELECT service_name, http_route, quantile_cont(duration_ns, 0.99) / 1e6 AS p99_ms
			FROM ` + from + ` WHERE kind = 'SERVER' GROUP BY ALL`},
		{"error traces of checkout", `SELECT trace_id, any_value(trace_root_name), max(trace_duration_ns) / 1e6
			FROM ` + from + ` WHERE trace_root_service = 'checkout' AND trace_has_error GROUP BY trace_id`},
		{"estimated traffic by root service", `SELECT trace_root_service, sum(sample_rate)
			FROM ` + from + ` WHERE parent_span_id = '' GROUP BY 1`},
	}
	fmt.Printf("\nDuckDB (threads=%s) over %d spans; best and median of %d runs:\n", threads, spans, reps)
	for _, q := range queries {
		var times []time.Duration
		var rows int
		for range reps {
			began := time.Now()
			res, err := db.Query(q.q)
			if err != nil {
				return fmt.Errorf("%s: %w", q.name, err)
			}
			rows = 0
			for res.Next() {
				rows++
			}
			if err := res.Err(); err != nil {
				return err
			}
			res.Close()
			times = append(times, time.Since(began))
		}
		slices.Sort(times)
		best, med := times[0], times[len(times)/2]
		fmt.Printf("  %-40s %4d rows  best %8v  median %8v  %6.1f M spans/s\n", q.name, rows,
			best.Round(100*time.Microsecond), med.Round(100*time.Microsecond), float64(spans)/best.Seconds()/1e6)
	}
	return nil
}

// reportLookups looks up archived trace IDs and a few that are not there,
// over the whole archive and over the trace's own hour (what --since
// narrows to), and prints what each lookup touched.
func reportLookups(ctx context.Context, st archive.Store, ids [][16]byte, r *rand.Rand) error {
	var absent [][16]byte
	for range 2 {
		var id [16]byte
		for i := range id {
			id[i] = byte(r.Uint32())
		}
		absent = append(absent, id)
	}
	for _, id := range append(slices.Clone(ids), absent...) {
		hexID := hex.EncodeToString(id[:])
		began := time.Now()
		rows, stats, err := archive.FindTrace(ctx, st, hexID, nil)
		if err != nil {
			return err
		}
		took := time.Since(began)
		line := fmt.Sprintf("  %s: %3d spans | whole archive: %d files opened, %d of %d row groups read, %d trace ids read, %v",
			hexID, len(rows), stats.FilesOpened, stats.RowGroupsRead, stats.RowGroups, stats.Rows, took.Round(100*time.Microsecond))
		if len(rows) > 0 {
			hour := time.Unix(0, rows[0].StartTimeUnixNano)
			began = time.Now()
			_, hs, err := archive.FindTrace(ctx, st, hexID, archive.PartitionPrefixes(hour, hour))
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" | its hour: %d files opened, %v", hs.FilesOpened, time.Since(began).Round(100*time.Microsecond))
		}
		fmt.Println(line)
	}
	return nil
}
