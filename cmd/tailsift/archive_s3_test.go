package main

import (
	"context"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tailsift/tailsift/archive"
	"github.com/tailsift/tailsift/bench/gen"
	"github.com/tailsift/tailsift/internal/s3test"
	"github.com/tailsift/tailsift/sampler"
	"gopkg.in/yaml.v3"
)

// keepShare is the probabilistic share TestArchiveS3DuckDB samples at: large
// enough that SUM(sample_rate) estimates per service land within a few
// percent of the truth with 10,000 traces.
const keepShare = 0.25

// TestArchiveS3DuckDB runs a node that archives to a real S3-compatible
// server (versitygw), fetches the archive through the archive's Store, and
// checks with DuckDB what analysts will ask against what the generator
// produced: row counts, a GROUP BY on promoted columns, one trace by ID and
// SUM(sample_rate) over root spans. The sampler keeps every error and slow
// trace and 25% of the rest by trace ID, so the exact set of kept traces
// follows from the generator's truth. It also runs `tailsift trace` against
// the bucket and every DuckDB query in the documentation against the
// downloaded archive.
func TestArchiveS3DuckDB(t *testing.T) {
	// The server's region differs from AWS_REGION (us-east-1): requests
	// succeed only if the configured region wins over the environment.
	const region = "eu-west-1"
	srv := s3test.StartInRegion(t, region)
	const topic = "otlp_spans"
	b, client := startBroker(t, 4)
	ctx := context.Background()
	truth, err := gen.Produce(ctx, client, topic, gen.Config{Seed: 5, Traces: 10_000})
	if err != nil {
		t.Fatal(err)
	}

	var policies yaml.Node
	doc := fmt.Sprintf("- type: error\n- type: latency\n  threshold: 2s\n- type: probabilistic\n  rate: %v\n", keepShare)
	if err := yaml.Unmarshal([]byte(doc), &policies); err != nil {
		t.Fatal(err)
	}
	spool := t.TempDir()
	n, stop := startTestNode(t, b.Addr(), topic, t.TempDir(), func(c *Config) {
		c.Archive.URL = srv.URL("traces")
		c.Archive.SpoolDir = spool
		c.Archive.S3 = S3Config{Endpoint: srv.Endpoint, PathStyle: true, Region: region}
		c.Policies = *policies.Content[0]
	})
	waitDecided(t, n, truth.Spans)
	stop() // closes every file and uploads the spool before it returns
	if left, _ := filepath.Glob(filepath.Join(spool, "dt=*", "hour=*", "*.parquet")); len(left) != 0 {
		t.Fatalf("spool not drained after shutdown: %v", left)
	}

	// What the sampler must have kept: a pure function of the truth.
	prob, err := sampler.NewProbabilisticPolicy(keepShare)
	if err != nil {
		t.Fatal(err)
	}
	var keptTraces, keptSpans, droppedID int
	var wantRateSum float64
	var dropped [16]byte
	for id, spans := range truth.SpansByTrace {
		_, isErr := truth.ErrorTraces[id]
		_, isSlow := truth.SlowTraces[id]
		switch {
		case isErr || isSlow:
			wantRateSum++
		case prob.Decide(&sampler.Trace{ID: id}).Decision == sampler.Keep:
			wantRateSum += 1 / keepShare
		default:
			dropped, droppedID = id, droppedID+1
			continue
		}
		keptTraces++
		keptSpans += spans
	}

	st, err := archive.OpenStore(ctx, srv.URL("traces"), archive.S3Config{Endpoint: srv.Endpoint, PathStyle: true, Region: region})
	if err != nil {
		t.Fatal(err)
	}
	dir := downloadArchive(t, st)
	db := openDuckDB(t)
	spans := fmt.Sprintf("read_parquet('%s/**/*.parquet', hive_partitioning = true)", dir)

	t.Run("row counts", func(t *testing.T) {
		var rows, distinct, traces, roots int
		queryRow(t, db, `SELECT count(*), count(DISTINCT (trace_id, span_id)), count(DISTINCT trace_id),
			count(*) FILTER (WHERE parent_span_id = '') FROM `+spans, nil, &rows, &distinct, &traces, &roots)
		if rows != keptSpans || distinct != keptSpans || traces != keptTraces || roots != keptTraces {
			t.Errorf("archive: %d rows (%d distinct spans), %d traces, %d roots; want %d spans of %d traces",
				rows, distinct, traces, roots, keptSpans, keptTraces)
		}
		t.Logf("%d spans of %d traces kept out of %d spans of %d traces generated", rows, traces, truth.Spans, truth.Traces)
	})

	t.Run("group by promoted columns", func(t *testing.T) {
		// Every error trace is kept, so counting error traces by the root's
		// service and http.route must give the generator's numbers exactly.
		res, err := db.Query(`SELECT service_name, http_request_method, http_route, count(*) FROM ` + spans + `
			WHERE parent_span_id = '' AND trace_has_error GROUP BY ALL`)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int{}
		for res.Next() {
			var svc, route string
			var method sql.NullString
			var c int
			if err := res.Scan(&svc, &method, &route, &c); err != nil {
				t.Fatal(err)
			}
			if !method.Valid {
				t.Errorf("root of %s %s has no http_request_method", svc, route)
			}
			got[svc+" "+route] += c
		}
		if err := res.Err(); err != nil {
			t.Fatal(err)
		}
		if !mapsEqual(got, truth.ErrorKeys) {
			t.Errorf("error traces by service and route:\n got  %v\n want %v", got, truth.ErrorKeys)
		}
	})

	t.Run("trace by id", func(t *testing.T) {
		checked := 0
		for id, want := range truth.ErrorTraces {
			var rows, roots, services int
			var reason string
			var rate float64
			queryRow(t, db, `SELECT count(*), count(*) FILTER (WHERE parent_span_id = ''), count(DISTINCT service_name),
				any_value(keep_reason), any_value(sample_rate) FROM `+spans+` WHERE trace_id = ?`,
				[]any{hex.EncodeToString(id[:])}, &rows, &roots, &services, &reason, &rate)
			if rows != want || roots != 1 || !strings.HasPrefix(reason, "error") || rate != 1 {
				t.Errorf("trace %x: %d rows (want %d), %d roots, keep_reason %q, sample_rate %v", id, rows, want, roots, reason, rate)
			}
			if checked++; checked == 5 {
				break
			}
		}
		var rows int
		queryRow(t, db, `SELECT count(*) FROM `+spans+` WHERE trace_id = ?`, []any{hex.EncodeToString(dropped[:])}, &rows)
		if droppedID == 0 || rows != 0 {
			t.Errorf("dropped trace %x: %d rows archived (%d traces dropped)", dropped, rows, droppedID)
		}
	})

	t.Run("sum of sample_rate over roots", func(t *testing.T) {
		var sum float64
		queryRow(t, db, `SELECT sum(sample_rate) FROM `+spans+` WHERE parent_span_id = ''`, nil, &sum)
		if sum != wantRateSum {
			t.Errorf("SUM(sample_rate) over roots = %v, want %v from the kept set", sum, wantRateSum)
		}
		if !estimateClose(sum, truth.Traces) {
			t.Errorf("SUM(sample_rate) = %.0f estimates %d generated traces", sum, truth.Traces)
		}
		res, err := db.Query(`SELECT trace_root_service, sum(sample_rate) FROM ` + spans + ` WHERE parent_span_id = '' GROUP BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		for res.Next() {
			var svc string
			var est float64
			if err := res.Scan(&svc, &est); err != nil {
				t.Fatal(err)
			}
			want := truth.ByService[svc]
			if !estimateClose(est, want) {
				t.Errorf("service %s: estimated %.0f traces, generated %d", svc, est, want)
			}
			t.Logf("service %s: estimated %.0f traces, generated %d", svc, est, want)
		}
		if err := res.Err(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("tailsift trace on the bucket", func(t *testing.T) {
		for id, want := range truth.ErrorTraces {
			out, err := tailsiftCmd("trace", hex.EncodeToString(id[:]), "--archive", srv.URL("traces"),
				"--s3-endpoint", srv.Endpoint, "--s3-path-style", "--s3-region", region, "--since", "48h").CombinedOutput()
			if err != nil {
				t.Fatalf("tailsift trace: %v\n%s", err, out)
			}
			if text := string(out); !strings.Contains(text, fmt.Sprintf("· %d spans ·", want)) || strings.Count(text, "─ ") != want {
				t.Fatalf("tailsift trace printed:\n%s", text)
			}
			break
		}
	})

	t.Run("documented queries", func(t *testing.T) {
		var someTrace string
		queryRow(t, db, `SELECT trace_id FROM `+spans+` WHERE trace_has_error LIMIT 1`, nil, &someTrace)
		checkDocQueries(t, db, dir, someTrace, "../../README.md", "../../archive/SCHEMA.md")
	})
}

// estimateClose reports whether est, a SUM(sample_rate) over kept roots,
// is within four standard deviations of the n traces it estimates: each
// ordinary trace is kept with probability keepShare and then counts
// 1/keepShare, so the estimate's variance is about n(1-p)/p.
func estimateClose(est float64, n int) bool {
	return math.Abs(est-float64(n)) <= 4*math.Sqrt(float64(n)*(1-keepShare)/keepShare)
}

// waitDecided waits until the node has decided every one of spans spans:
// each is kept (on its way to the archive) or dropped, with its trace or
// late, following its trace's decision.
func waitDecided(t *testing.T, n *node, spans int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		kept := sumCounter(n.reg, "tailsift_sampler_spans_kept_total", "", "")
		dropped := sumCounter(n.reg, "tailsift_sampler_spans_dropped_total", "", "") +
			sumCounter(n.reg, "tailsift_sampler_late_spans_total", "decision", "drop")
		if int(kept+dropped) >= spans {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node decided %.0f of %d spans in 3 minutes", kept+dropped, spans)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// downloadArchive copies every file of the archive into a temporary
// directory with the same layout, through the Store's ranged reads: DuckDB
// reads S3 only with its httpfs extension, which tests cannot download.
func downloadArchive(t *testing.T, st archive.Store) string {
	t.Helper()
	ctx := context.Background()
	objs, err := st.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) == 0 {
		t.Fatalf("no objects in %s", st)
	}
	dir := t.TempDir()
	buf := make([]byte, 8<<20)
	for _, o := range objs {
		ra, closer, err := st.Open(ctx, o.Key)
		if err != nil {
			t.Fatal(err)
		}
		local := filepath.Join(dir, filepath.FromSlash(o.Key))
		if err := os.MkdirAll(filepath.Dir(local), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(local)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyBuffer(f, io.NewSectionReader(ra, 0, o.Size), buf); err != nil {
			t.Fatalf("%s: %v", o.Key, err)
		}
		closer.Close()
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// queryRow runs a query that returns one row and scans it into dest.
func queryRow(t *testing.T, db *sql.DB, q string, args []any, dest ...any) {
	t.Helper()
	if err := db.QueryRow(q, args...).Scan(dest...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// docArchivePath is the archive path the documentation's queries use, and
// docTraceID the trace ID they look up; the test substitutes real ones.
const (
	docArchivePath = "tailsift-data/"
	docTraceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
)

var sqlBlock = regexp.MustCompile("(?s)```sql\n(.*?)```")

// checkDocQueries runs every statement of every ```sql block that starts
// with "-- DuckDB" in the given Markdown files against the archive in dir,
// and requires each to succeed and return at least one row, so the
// documented examples cannot drift from the schema.
func checkDocQueries(t *testing.T, db *sql.DB, dir, traceID string, files ...string) {
	t.Helper()
	ran := 0
	for _, file := range files {
		text, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range sqlBlock.FindAllStringSubmatch(string(text), -1) {
			block := m[1]
			if !strings.HasPrefix(block, "-- DuckDB") {
				continue
			}
			block = strings.ReplaceAll(block, docArchivePath, dir+"/")
			block = strings.ReplaceAll(block, docTraceID, traceID)
			for _, stmt := range strings.Split(block, ";") {
				if strings.TrimSpace(stripComments(stmt)) == "" {
					continue
				}
				rows, err := db.Query(stmt)
				if err != nil {
					t.Errorf("%s: %v\n%s", file, err, stmt)
					continue
				}
				cols, _ := rows.Columns()
				n := 0
				for rows.Next() {
					n++
				}
				if err := rows.Err(); err != nil {
					t.Errorf("%s: %v\n%s", file, err, stmt)
				}
				rows.Close()
				if n == 0 {
					t.Errorf("%s: query returned no rows on a real archive:\n%s", file, stmt)
				}
				ran++
				t.Logf("%s: %d rows, columns %v", filepath.Base(file), n, cols)
			}
		}
	}
	if ran < 5 {
		t.Errorf("ran %d documented DuckDB queries; the documentation has fewer than expected", ran)
	}
}

func stripComments(s string) string {
	lines := strings.Split(s, "\n")
	return strings.Join(slices.DeleteFunc(lines, func(l string) bool { return strings.HasPrefix(strings.TrimSpace(l), "--") }), "\n")
}

// TestRunS3Flags checks that `tailsift run` takes the S3 settings in the
// form the archive tools do (--s3-path-style as a switch) into the archive
// configuration.
func TestRunS3Flags(t *testing.T) {
	fs := newFlagSet("run", io.Discard)
	registerConfigFlags(fs)
	args := []string{"--archive", "s3://traces/p", "--s3-path-style", "--s3-region", "eu-west-1",
		"--s3-endpoint", "http://127.0.0.1:7070"}
	if err := fs.Parse(joinBoolValues(fs, args)); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(fs, "", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	want := S3Config{Region: "eu-west-1", Endpoint: "http://127.0.0.1:7070", PathStyle: true}
	if cfg.Archive.URL != "s3://traces/p" || cfg.Archive.S3 != want || fs.NArg() != 0 {
		t.Fatalf("archive config %+v, %d arguments left", cfg.Archive, fs.NArg())
	}
}
