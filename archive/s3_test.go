package archive

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/parquet-go/parquet-go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tailsift/tailsift/internal/s3test"
	"github.com/tailsift/tailsift/sampler"
)

// download fetches every object under prefix through the S3 API into a
// local directory with the same layout.
func download(t *testing.T, srv *s3test.Server, prefix string) string {
	t.Helper()
	ctx := context.Background()
	client, err := newS3Client(ctx, S3Config{Endpoint: srv.Endpoint, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := s3.NewListObjectsV2Paginator(client, &s3.ListObjectsV2Input{Bucket: aws.String(srv.Bucket), Prefix: aws.String(prefix + "/")})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(srv.Bucket), Key: o.Key})
			if err != nil {
				t.Fatal(err)
			}
			local := filepath.Join(dir, strings.TrimPrefix(*o.Key, prefix+"/"))
			os.MkdirAll(filepath.Dir(local), 0o755)
			f, _ := os.Create(local)
			if _, err := f.ReadFrom(out.Body); err != nil {
				t.Fatal(err)
			}
			f.Close()
			out.Body.Close()
		}
	}
	return dir
}

func countRows(t *testing.T, dir string) int {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "dt=*", "hour=*", "part-*.parquet"))
	n := 0
	for _, f := range files {
		rows, err := parquet.ReadFile[Row](f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		n += len(rows)
	}
	return n
}

func TestS3Archive(t *testing.T) {
	srv := s3test.Start(t)
	spool := t.TempDir()
	in, done := startWriter(t, Config{URL: srv.URL("spans"), SpoolDir: spool, NodeID: "n1",
		S3: S3Config{Endpoint: srv.Endpoint, PathStyle: true}}, nil)
	var src sampler.Pending
	start := time.Now().Add(-time.Minute)
	for i := 0; i < 100; i++ { // each a microsecond later: no span copies another
		for _, k := range keptTraces(t, testTraces(start.Add(time.Duration(i)*time.Microsecond)), &src, start) {
			in <- k
		}
	}
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, download(t, srv, "spans")); n != 300 {
		t.Fatalf("read %d rows back from S3, wrote 300", n)
	}
	if left, _ := filepath.Glob(filepath.Join(spool, "dt=*", "hour=*", "*.parquet")); len(left) != 0 {
		t.Fatalf("spool not drained: %v", left)
	}
}

// TestS3OutageLosesNothing stops the S3 server for 30 seconds while the
// archive keeps writing: files wait in the spool (their spans settled, since
// the spool is durable), uploads are retried, and once the server is back
// everything arrives.
func TestS3OutageLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 30s")
	}
	srv := s3test.Start(t)
	spool := t.TempDir()
	m := NewMetrics(nil)
	in, done := startWriter(t, Config{URL: srv.URL("spans"), SpoolDir: spool, RollAge: time.Second,
		S3: S3Config{Endpoint: srv.Endpoint, PathStyle: true}}, m)
	start := time.Now().Add(-time.Minute)
	var src sampler.Pending
	sent := 0
	send := func(n int) {
		for i := 0; i < n; i++ { // each a microsecond later: no span copies another
			for _, k := range keptTraces(t, testTraces(start.Add(time.Duration(sent)*time.Microsecond)), &src, start) {
				sent += len(k.Spans)
				in <- k
			}
		}
	}
	send(50)
	srv.Stop()
	outage := time.Now()
	for time.Since(outage) < 30*time.Second {
		send(10)
		time.Sleep(500 * time.Millisecond)
	}
	// Retries back off (1s, 2s, 4s, … up to 30s): over a 30-second outage
	// that is at most six failed attempts, where retrying every second
	// would fail thirty times.
	if f := testutil.ToFloat64(m.uploadFailures); f == 0 || f > 6 {
		t.Fatalf("%v failed uploads during a 30s outage; want 1 to 6 (retries with backoff)", f)
	} else {
		t.Logf("%v failed uploads during the 30s outage", f)
	}
	if spooled, _ := filepath.Glob(filepath.Join(spool, "dt=*", "hour=*", "part-*.parquet")); len(spooled) == 0 {
		t.Fatal("nothing waiting in the spool during the outage")
	}
	srv.Restart()
	send(50)
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := countRows(t, download(t, srv, "spans")); got != sent {
		t.Fatalf("read %d rows back from S3, sent %d", got, sent)
	}
	if !src.Settled() {
		t.Fatal("spans not settled")
	}
	if left, _ := filepath.Glob(filepath.Join(spool, "dt=*", "hour=*", "*.parquet")); len(left) != 0 {
		t.Fatalf("spool not drained: %v", left)
	}
}

// TestS3StoreTools runs the archive tools against object storage: trace
// lookup with ranged reads, compaction (upload then delete) and retention.
func TestS3StoreTools(t *testing.T) {
	srv := s3test.Start(t)
	cfg := S3Config{Endpoint: srv.Endpoint, PathStyle: true}
	start := time.Now().UTC().Add(-3 * time.Hour)
	r := rand.New(rand.NewPCG(1, 2))
	var src sampler.Pending
	var kept []*sampler.Kept
	for run := 0; run < 2; run++ {
		batch := randomKept(t, r, 200, start, &src)
		kept = append(kept, batch...)
		archiveKept(t, Config{URL: srv.URL("spans"), SpoolDir: t.TempDir(), S3: cfg}, batch)
	}
	ctx := context.Background()
	st, err := OpenStore(ctx, srv.URL("spans"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := Partitions(ctx, st)
	if err != nil || len(parts) != 1 || len(parts[0].Keys) != 2 {
		t.Fatalf("partitions %+v, %v", parts, err)
	}
	id := hex.EncodeToString(kept[123].ID[:])
	rows, stats, err := FindTrace(ctx, st, id, nil)
	if err != nil || len(rows) != 4 || stats.FilesOpened != 2 {
		t.Fatalf("lookup: %d rows, %+v, %v", len(rows), stats, err)
	}
	res, err := Compact(ctx, st, parts[0], 0, "t")
	if err != nil || res.FilesAfter != 1 || res.Rows != 1600 {
		t.Fatalf("compaction: %+v, %v", res, err)
	}
	if keys, _ := srv.Objects("spans"); len(keys) != 1 {
		t.Fatalf("objects after compaction: %v", keys)
	}
	plan := PlanRetention(mustPartitions(t, st), time.Hour, 0, time.Now())
	if len(plan.Delete) != 1 {
		t.Fatalf("retention plan: %+v", plan)
	}
	if err := plan.Apply(ctx, st, nil); err != nil {
		t.Fatal(err)
	}
	if keys, _ := srv.Objects("spans"); len(keys) != 0 {
		t.Fatalf("objects after retention: %v", keys)
	}
}

// TestS3StoreToolsPaddedHour: on object storage too, an hour partly under
// the padded hour=04 of older archives is one partition, looked up under
// both forms and compacted into hour=4 alone.
func TestS3StoreToolsPaddedHour(t *testing.T) {
	srv := s3test.Start(t)
	cfg := S3Config{Endpoint: srv.Endpoint, PathStyle: true}
	start := time.Date(2026, 2, 3, 4, 10, 0, 0, time.UTC)
	r := rand.New(rand.NewPCG(3, 4))
	var src sampler.Pending
	var runs [][]*sampler.Kept
	for run := 0; run < 2; run++ {
		batch := randomKept(t, r, 200, start, &src)
		runs = append(runs, batch)
		archiveKept(t, Config{URL: srv.URL("spans"), SpoolDir: t.TempDir(), S3: cfg}, batch)
	}
	ctx := context.Background()
	st, err := OpenStore(ctx, srv.URL("spans"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Move one run's file under the padded form.
	objs, err := st.List(ctx, "dt=2026-02-03/hour=4/")
	if err != nil || len(objs) != 2 {
		t.Fatalf("objects %v, %v", objs, err)
	}
	ra, closer, err := st.Open(ctx, objs[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(io.NewSectionReader(ra, 0, objs[0].Size))
	closer.Close()
	if err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(t.TempDir(), "f.parquet")
	if err := os.WriteFile(local, data, 0o644); err != nil {
		t.Fatal(err)
	}
	moved := "dt=2026-02-03/hour=04/" + filepath.Base(objs[0].Key)
	if err := st.Put(ctx, moved, local); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, objs[0].Key); err != nil {
		t.Fatal(err)
	}
	parts := mustPartitions(t, st)
	if len(parts) != 1 || len(parts[0].Prefixes) != 2 || len(parts[0].Keys) != 2 {
		t.Fatalf("partitions %+v", parts)
	}
	// Each run's traces are in one file: one of these is under hour=04.
	for _, id := range []string{hex.EncodeToString(runs[0][0].ID[:]), hex.EncodeToString(runs[1][0].ID[:])} {
		rows, _, err := FindTrace(ctx, st, id, PartitionPrefixes(start, start))
		if err != nil || len(rows) != 4 {
			t.Fatalf("lookup of %s: %d rows, %v", id, len(rows), err)
		}
	}
	res, err := Compact(ctx, st, parts[0], 0, "t")
	if err != nil || res.FilesBefore != 2 || res.FilesAfter != 1 || res.Rows != 1600 {
		t.Fatalf("compaction: %+v, %v", res, err)
	}
	if keys, _ := srv.Objects("spans"); len(keys) != 1 || !strings.HasPrefix(keys[0], "spans/dt=2026-02-03/hour=4/part-compact-") {
		t.Fatalf("objects after compaction: %v", keys)
	}
}

func mustPartitions(t *testing.T, st Store) []Partition {
	t.Helper()
	p, err := Partitions(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// requestLog records the S3 operations a client sends, by the query
// parameters that name them.
type requestLog struct {
	mu                              sync.Mutex
	puts, creates, parts, completes int
}

func (l *requestLog) RoundTrip(req *http.Request) (*http.Response, error) {
	q := req.URL.Query()
	l.mu.Lock()
	switch {
	case req.Method == http.MethodPost && q.Has("uploads"):
		l.creates++
	case req.Method == http.MethodPut && q.Has("partNumber"):
		l.parts++
	case req.Method == http.MethodPost && q.Has("uploadId"):
		l.completes++
	case req.Method == http.MethodPut:
		l.puts++
	}
	l.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

// TestS3MultipartUpload checks that a file larger than the part size goes
// up as a multipart upload (and a small one as one PUT), and that both read
// back byte for byte through ranged reads.
func TestS3MultipartUpload(t *testing.T) {
	srv := s3test.Start(t)
	ctx := context.Background()
	var log requestLog
	st, err := newS3Store(ctx, location{scheme: "s3", bucket: srv.Bucket, prefix: "big"},
		S3Config{Endpoint: srv.Endpoint, PathStyle: true},
		func(o *s3.Options) { o.HTTPClient = &http.Client{Transport: &log} })
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, size := range []int{partSize*2 + 12345, 1 << 20} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		file := filepath.Join(t.TempDir(), "f.parquet")
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprintf("dt=2026-11-23/hour=06/part-%d.parquet", size)
		if err := st.Put(ctx, key, file); err != nil {
			t.Fatal(err)
		}
		ra, _, err := st.Open(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		back, err := io.ReadAll(io.NewSectionReader(ra, 0, int64(size)))
		if err != nil || !bytes.Equal(back, data) {
			t.Fatalf("%d bytes: read back %d bytes, equal %v, %v", size, len(back), bytes.Equal(back, data), err)
		}
	}
	if log.creates != 1 || log.parts != 3 || log.completes != 1 || log.puts != 1 {
		t.Fatalf("requests: %d CreateMultipartUpload, %d UploadPart, %d CompleteMultipartUpload, %d PutObject; "+
			"want 1, 3, 1 (the large file) and 1 (the small one)", log.creates, log.parts, log.completes, log.puts)
	}
}

// TestS3SpoolUploadedAfterRestart writes while the store is down and stops
// the writer before it could upload (the shutdown grace period ran out):
// the spans are settled, since the spool is durable, and the next run
// uploads the spool before anything else.
func TestS3SpoolUploadedAfterRestart(t *testing.T) {
	srv := s3test.Start(t)
	srv.Stop()
	spool := t.TempDir()
	cfg := Config{URL: srv.URL("spans"), SpoolDir: spool, NodeID: "n1", S3: S3Config{Endpoint: srv.Endpoint, PathStyle: true}}
	w, err := New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := make(chan *sampler.Kept)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, in) }()
	var src sampler.Pending
	start := time.Now().Add(-time.Minute)
	sent := 0
	for i := 0; i < 50; i++ { // each a microsecond later: no span copies another
		for _, k := range keptTraces(t, testTraces(start.Add(time.Duration(i)*time.Microsecond)), &src, start) {
			sent += len(k.Spans)
			in <- k
		}
	}
	close(in)
	deadline := time.Now().Add(30 * time.Second)
	for !src.Settled() {
		if time.Now().After(deadline) {
			t.Fatal("spans not settled with the store down: the spool should make them durable")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel() // the grace period ends while uploads still fail
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: %v", err)
	}
	if spooled := countRows(t, spool); spooled != sent {
		t.Fatalf("spool holds %d rows, sent %d", spooled, sent)
	}

	srv.Restart()
	in2, done2 := startWriter(t, cfg, nil)
	close(in2)
	if err := <-done2; err != nil {
		t.Fatal(err)
	}
	if got := countRows(t, download(t, srv, "spans")); got != sent {
		t.Fatalf("read %d rows back from S3 after the restart, sent %d", got, sent)
	}
	if left, _ := filepath.Glob(filepath.Join(spool, "dt=*", "hour=*", "*.parquet")); len(left) != 0 {
		t.Fatalf("spool not drained: %v", left)
	}
}

// TestS3EndpointFromEnvironment checks that the endpoint, like the
// credentials and region, can come from the standard AWS environment
// (AWS_ENDPOINT_URL_S3) rather than the archive's own settings.
func TestS3EndpointFromEnvironment(t *testing.T) {
	srv := s3test.Start(t)
	t.Setenv("AWS_ENDPOINT_URL_S3", srv.Endpoint)
	ctx := context.Background()
	st, err := OpenStore(ctx, srv.URL("env"), S3Config{PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "f.parquet")
	if err := os.WriteFile(file, []byte("PAR1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, "dt=2026-11-23/hour=06/a.parquet", file); err != nil {
		t.Fatal(err)
	}
	if keys, _ := srv.Objects("env"); len(keys) != 1 || keys[0] != "env/dt=2026-11-23/hour=06/a.parquet" {
		t.Fatalf("objects: %v", keys)
	}
}
