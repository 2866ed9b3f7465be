package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tailsift/tailsift/archive"
)

// archiveFlags are the flags every archive tool takes to reach the archive.
type archiveFlags struct {
	url       *string
	endpoint  *string
	region    *string
	pathStyle *bool
}

func addArchiveFlags(fs *flag.FlagSet) archiveFlags {
	return archiveFlags{
		url:       fs.String("archive", "", "archive URL: file:///path or s3://bucket/prefix (required)"),
		endpoint:  fs.String("s3-endpoint", "", "S3 endpoint override, for S3-compatible servers"),
		region:    fs.String("s3-region", "", "S3 region"),
		pathStyle: fs.Bool("s3-path-style", false, "address the bucket in the path (MinIO, versitygw)"),
	}
}

func (a archiveFlags) open(ctx context.Context) (archive.Store, error) {
	if *a.url == "" {
		return nil, errors.New("--archive: required (file:///path or s3://bucket/prefix)")
	}
	return archive.OpenStore(ctx, *a.url, archive.S3Config{Endpoint: *a.endpoint, Region: *a.region, PathStyle: *a.pathStyle})
}

// parseAge parses a duration that may be given in days: "30d", "36h", "90m".
func parseAge(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(d, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%q is not a duration (e.g. 30d, 36h)", s)
		}
		return time.Duration(n * float64(24*time.Hour)), nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%q is not a duration (e.g. 30d, 36h)", s)
	}
	return v, nil
}

// parseDecimalSize parses sizes as storage is billed: 500GB, 2TB, 750MB,
// and the binary forms parseSize takes.
func parseDecimalSize(s string) (int64, error) {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"kB", 1e3}, {"KB", 1e3}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok && !strings.HasSuffix(v, "i") {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil || n < 0 {
				return 0, fmt.Errorf("%q is not a size (e.g. 500GB, 2TB)", s)
			}
			return int64(n * float64(u.mult)), nil
		}
	}
	return parseSize(s)
}

func cmdTrace(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("trace", stderr)
	af := addArchiveFlags(fs)
	since := fs.String("since", "", "only search partitions of the last DUR (e.g. 6h, 7d); default: the whole archive")
	// Accept the trace ID before or after the flags.
	var id string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if id == "" && fs.NArg() == 1 {
		id = fs.Arg(0)
	} else if fs.NArg() > 0 || id == "" {
		fmt.Fprintln(stderr, "usage: tailsift trace <trace-id> --archive URL [--since DUR]")
		return errUsage
	}
	id, err := archive.ParseTraceID(id)
	if err != nil {
		return err
	}
	var prefixes []string
	if *since != "" {
		d, err := parseAge(*since)
		if err != nil {
			return fmt.Errorf("--since: %w", err)
		}
		now := time.Now()
		prefixes = archive.PartitionPrefixes(now.Add(-d), now)
	}
	st, err := af.open(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	rows, stats, err := archive.FindTrace(ctx, st, id, prefixes)
	if err != nil {
		return err
	}
	took := time.Since(start)
	if len(rows) == 0 {
		fmt.Fprintf(stdout, "trace %s not found\n", id)
	} else {
		printTrace(stdout, rows)
	}
	fmt.Fprintf(stdout, "\nsearched %d files, opened %d, read %d of %d row groups (%d trace ids) in %v\n",
		stats.Files, stats.FilesOpened, stats.RowGroupsRead, stats.RowGroups, stats.Rows, took.Round(time.Millisecond))
	if len(rows) == 0 {
		return errors.New("trace not found")
	}
	return nil
}

// printTrace prints a trace as a tree of spans with their durations.
func printTrace(w io.Writer, rows []archive.Row) {
	first := rows[0]
	fmt.Fprintf(w, "trace %s · %d spans · %s · kept: %s (sample_rate %g)\n", first.TraceID, len(rows),
		time.Duration(first.TraceDurationNs), first.KeepReason, first.SampleRate)
	children := map[string][]int{}
	present := map[string]bool{}
	for _, r := range rows {
		present[r.SpanID] = true
	}
	var roots []int
	for i, r := range rows {
		if r.ParentSpanID == "" || !present[r.ParentSpanID] {
			roots = append(roots, i)
			continue
		}
		children[r.ParentSpanID] = append(children[r.ParentSpanID], i)
	}
	seen := map[int]bool{}
	var walk func(i int, indent string, last bool)
	walk = func(i int, indent string, last bool) {
		if seen[i] { // a cycle in parent IDs: print each span once
			return
		}
		seen[i] = true
		r := rows[i]
		branch, next := "├─ ", "│  "
		if last {
			branch, next = "└─ ", "   "
		}
		status := ""
		if r.StatusCode == "ERROR" {
			status = "  ERROR"
			if r.StatusMessage != "" {
				status += ": " + r.StatusMessage
			}
		}
		orphan := ""
		if r.ParentSpanID != "" && !present[r.ParentSpanID] {
			orphan = "  (parent " + r.ParentSpanID + " not archived)"
		}
		fmt.Fprintf(w, "%s%s%s %s  %v%s%s\n", indent, branch, r.ServiceName, r.Name, time.Duration(r.DurationNs).Round(time.Microsecond), status, orphan)
		kids := children[r.SpanID]
		for j, c := range kids {
			walk(c, indent+next, j == len(kids)-1)
		}
	}
	for j, i := range roots {
		walk(i, "", j == len(roots)-1)
	}
}

func cmdRetention(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("retention", stderr)
	af := addArchiveFlags(fs)
	maxAge := fs.String("max-age", "", "delete partitions whose hour ended longer ago than this (e.g. 30d)")
	maxBytes := fs.String("max-bytes", "", "delete the oldest partitions until the archive is at most this big (e.g. 500GB)")
	dryRun := fs.Bool("dry-run", false, "print what would be deleted, delete nothing")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var age time.Duration
	var size int64
	var err error
	if *maxAge != "" {
		if age, err = parseAge(*maxAge); err != nil {
			return fmt.Errorf("--max-age: %w", err)
		}
	}
	if *maxBytes != "" {
		if size, err = parseDecimalSize(*maxBytes); err != nil {
			return fmt.Errorf("--max-bytes: %w", err)
		}
	}
	if age == 0 && size == 0 {
		return errors.New("give --max-age, --max-bytes or both")
	}
	st, err := af.open(ctx)
	if err != nil {
		return err
	}
	parts, err := archive.Partitions(ctx, st)
	if err != nil {
		return err
	}
	plan := archive.PlanRetention(parts, age, size, time.Now())
	verb := "deleted"
	if *dryRun {
		verb = "would delete"
	}
	for i, p := range plan.Delete {
		if *dryRun {
			fmt.Fprintf(stdout, "%s %s (%d files, %s): %s\n", verb, p.Prefix, len(p.Keys), archive.FormatBytes(p.Bytes), plan.DeleteWhy[i])
		}
	}
	if !*dryRun {
		i := 0
		err = plan.Apply(ctx, st, func(p archive.Partition) {
			fmt.Fprintf(stdout, "%s %s (%d files, %s): %s\n", verb, p.Prefix, len(p.Keys), archive.FormatBytes(p.Bytes), plan.DeleteWhy[i])
			i++
		})
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "%s %d of %d partitions; %s of %s remain in %s\n", verb, len(plan.Delete), len(parts),
		archive.FormatBytes(plan.KeptBytes), archive.FormatBytes(plan.TotalBytes), st)
	if plan.Unsatisfied {
		fmt.Fprintf(stdout, "note: the current hour alone exceeds --max-bytes; it is not deleted while being written\n")
	}
	return nil
}

func cmdCompact(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("compact", stderr)
	af := addArchiveFlags(fs)
	olderThan := fs.String("older-than", "2h", "only partitions whose hour ended longer ago than this (writers are done with them)")
	target := fs.String("target-size", "512MB", "size of the compacted files")
	dryRun := fs.Bool("dry-run", false, "print what would be compacted, change nothing")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	age, err := parseAge(*olderThan)
	if err != nil {
		return fmt.Errorf("--older-than: %w", err)
	}
	size, err := parseDecimalSize(*target)
	if err != nil || size < 1<<20 {
		return fmt.Errorf("--target-size: must be at least 1MiB, got %q", *target)
	}
	st, err := af.open(ctx)
	if err != nil {
		return err
	}
	parts, err := archive.Partitions(ctx, st)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	cutoff := time.Now().Add(-age)
	done := 0
	for _, p := range parts {
		if p.Hour.Add(time.Hour).After(cutoff) {
			continue
		}
		if *dryRun {
			fmt.Fprintf(stdout, "would compact %s (%d files, %s)\n", p.Prefix, len(p.Keys), archive.FormatBytes(p.Bytes))
			continue
		}
		res, err := archive.Compact(ctx, st, p, size, host)
		if err != nil {
			return fmt.Errorf("compacting %s: %w", p.Prefix, err)
		}
		if res.Skipped != "" {
			continue
		}
		done++
		fmt.Fprintf(stdout, "compacted %s: %d files (%s) → %d (%s), %d rows, %d duplicate spans removed\n",
			p.Prefix, res.FilesBefore, archive.FormatBytes(res.BytesBefore), res.FilesAfter,
			archive.FormatBytes(res.BytesAfter), res.Rows, res.Duplicates)
	}
	if !*dryRun {
		fmt.Fprintf(stdout, "compacted %d partitions in %s\n", done, st)
	}
	return nil
}
