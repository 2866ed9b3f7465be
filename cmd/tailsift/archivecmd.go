package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
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
		url:       fs.String("archive", "", "archive `URL`: file:///path or s3://bucket/prefix (required)"),
		endpoint:  fs.String("s3-endpoint", "", "S3 endpoint `URL` override, for S3-compatible servers"),
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

func cmdTrace(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newCommandFlags("trace", "<trace-id>", stderr)
	af := addArchiveFlags(fs)
	since := durationFlag(fs, "since", "", "only search partitions of the last this long (e.g. 6h, 7d); default: the whole archive")
	// Accept the trace ID before or after the flags.
	var id string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	if id == "" && fs.NArg() == 1 {
		id = fs.Arg(0)
	} else if fs.NArg() > 0 || id == "" {
		fmt.Fprintln(stderr, "usage: tailsift trace <trace-id> --archive URL [--since DURATION]")
		printHint(fs)
		return errUsage
	}
	id, err := archive.ParseTraceID(id)
	if err != nil {
		return err
	}
	var prefixes []string
	if since.v > 0 {
		now := time.Now()
		prefixes = archive.PartitionPrefixes(now.Add(-since.v), now)
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
	rows, dups := uniqueSpans(rows)
	if len(rows) == 0 {
		fmt.Fprintf(stdout, "trace %s not found\n", id)
	} else {
		printTrace(stdout, rows)
	}
	if dups > 0 {
		fmt.Fprintf(stdout, "\n%d duplicate spans not shown: Kafka delivers at least once, so a span re-read after a restart or rebalance can be archived twice (tailsift compact removes them)\n", dups)
	}
	fmt.Fprintf(stdout, "\nsearched %d files, opened %d, read %d of %d row groups (%d trace ids) in %v\n",
		stats.Files, stats.FilesOpened, stats.RowGroupsRead, stats.RowGroups, stats.Rows, took.Round(time.Millisecond))
	if len(rows) == 0 {
		return errors.New("trace not found")
	}
	return nil
}

// uniqueSpans keeps the first row of each span ID, in order, and counts
// the others.
func uniqueSpans(rows []archive.Row) (unique []archive.Row, dups int) {
	seen := make(map[string]bool, len(rows))
	unique = rows[:0:0]
	for _, r := range rows {
		if seen[r.SpanID] {
			dups++
			continue
		}
		seen[r.SpanID] = true
		unique = append(unique, r)
	}
	return unique, dups
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
	maxAge := durationFlag(fs, "max-age", "", "delete partitions whose hour ended longer ago than this (e.g. 30d)")
	maxBytes := sizeFlag(fs, "max-bytes", "", "delete the oldest partitions until the archive is at most this big (e.g. 500GB)")
	dryRun := fs.Bool("dry-run", false, "print what would be deleted, delete nothing")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	age, size := maxAge.v, maxBytes.v
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
	// Say why in the user's own words: "older than 30d", not 720h0m0s.
	why := func(i int) string {
		switch w := plan.DeleteWhy[i]; {
		case strings.HasPrefix(w, "older than "):
			return "older than " + maxAge.text
		case strings.HasPrefix(w, "archive over "):
			return "archive over " + maxBytes.text
		default:
			return w
		}
	}
	verb := "deleted"
	if *dryRun {
		verb = "would delete"
		for i, p := range plan.Delete {
			fmt.Fprintf(stdout, "%s %s (%d files, %s): %s\n", verb, p, len(p.Keys), archive.FormatBytes(p.Bytes), why(i))
		}
	} else {
		i := 0
		err = plan.Apply(ctx, st, func(p archive.Partition) {
			fmt.Fprintf(stdout, "%s %s (%d files, %s): %s\n", verb, p, len(p.Keys), archive.FormatBytes(p.Bytes), why(i))
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
	olderThan := durationFlag(fs, "older-than", "2h", "only partitions whose hour ended longer ago than this (writers are done with them)")
	target := sizeFlag(fs, "target-size", "512MB", "size of the compacted files")
	dryRun := fs.Bool("dry-run", false, "print what would be compacted, change nothing")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	age, size := olderThan.v, target.v
	if size < 1<<20 {
		return fmt.Errorf("--target-size: must be at least 1MiB, got %q", target.text)
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
	// The dry run and the real run decide alike: a partition is skipped
	// before any work for the same reasons, and Compact may skip one more
	// only if its files changed in between.
	var done, skipped int
	for _, p := range parts {
		if why := compactSkip(p, cutoff, olderThan.text); why != "" {
			skipped++
			fmt.Fprintf(stdout, "skipped %s (%d files, %s): %s\n", p, len(p.Keys), archive.FormatBytes(p.Bytes), why)
			continue
		}
		if *dryRun {
			done++
			fmt.Fprintf(stdout, "would compact %s (%d files, %s)\n", p, len(p.Keys), archive.FormatBytes(p.Bytes))
			continue
		}
		res, err := archive.Compact(ctx, st, p, size, host)
		if err != nil {
			return fmt.Errorf("compacting %s: %w", p, err)
		}
		if res.Skipped != "" {
			skipped++
			fmt.Fprintf(stdout, "skipped %s: %s\n", p, res.Skipped)
			continue
		}
		done++
		fmt.Fprintf(stdout, "compacted %s: %d files (%s) → %d (%s), %d rows, %d duplicate spans removed\n",
			p, res.FilesBefore, archive.FormatBytes(res.BytesBefore), res.FilesAfter,
			archive.FormatBytes(res.BytesAfter), res.Rows, res.Duplicates)
	}
	verb := "compacted"
	if *dryRun {
		verb = "would compact"
	}
	fmt.Fprintf(stdout, "%s %d of %d partitions in %s; %d skipped\n", verb, done, len(parts), st, skipped)
	return nil
}

// compactSkip says why compact leaves partition p alone, or "" if it
// compacts it: an hour that ended after cutoff may still get files from
// running nodes; a partition of one compacted file has nothing to merge.
func compactSkip(p archive.Partition, cutoff time.Time, olderThan string) string {
	if end := p.Hour.Add(time.Hour); end.After(cutoff) {
		return fmt.Sprintf("its hour ends %s, less than --older-than %s ago (nodes may still write to it)",
			end.UTC().Format("2006-01-02 15:04 UTC"), olderThan)
	}
	var data []string
	for _, k := range p.Keys {
		if strings.HasSuffix(k, ".parquet") {
			data = append(data, k)
		}
	}
	if len(data) == 0 {
		return "no Parquet files"
	}
	if p.Compacted() {
		return "already compact (one compacted file)"
	}
	return ""
}
