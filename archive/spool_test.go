package archive

import (
	"bytes"
	"context"
	"encoding/hex"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tailsift/tailsift/internal/s3test"
	"github.com/tailsift/tailsift/sampler"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// bulkyTrace is one span carrying 8 KiB of random hex, so that files do
// not compress to nothing and a small spool fills after a few of them.
func bulkyTrace(r *rand.Rand, n int, start time.Time) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "bulk")
	sp := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	var id pcommon.TraceID
	for i := range id {
		id[i] = byte(r.Uint32())
	}
	sp.SetTraceID(id)
	sp.SetSpanID(pcommon.SpanID{1, 2, 3, 4, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	sp.SetName("bulk")
	sp.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
	sp.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(time.Millisecond)))
	blob := make([]byte, 4096)
	for i := range blob {
		blob[i] = byte(r.Uint32())
	}
	sp.Attributes().PutStr("blob", hex.EncodeToString(blob))
	return td
}

// TestSpoolCapHoldsBack fills a small spool while the store is down: the
// writer alarms and then stops taking traces (nothing dropped, nothing
// settled that is not durable), and resumes when the store is back, with
// every span uploaded.
func TestSpoolCapHoldsBack(t *testing.T) {
	srv := s3test.Start(t)
	srv.Stop()
	spool := t.TempDir()
	m := NewMetrics(nil)
	var logs syncBuffer
	const limit = 1 << 20
	in, done := startWriter(t, Config{URL: srv.URL("spans"), SpoolDir: spool, SpoolMaxBytes: limit,
		RollBytes: 1 << 20, RollAge: time.Second, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		S3: S3Config{Endpoint: srv.Endpoint, PathStyle: true}}, m)

	r := rand.New(rand.NewPCG(1, 2))
	start := time.Now().Add(-time.Minute)
	var pendings []*sampler.Pending
	sent := 0
	next := func() *sampler.Kept {
		src := &sampler.Pending{}
		pendings = append(pendings, src)
		ks := keptTraces(t, bulkyTrace(r, sent, start), src, start)
		return ks[0]
	}
	// Send until the writer stops taking traces for 5 seconds.
	k := next()
	for blocked := false; !blocked; {
		select {
		case in <- k:
			sent++
			if sent > 5000 {
				t.Fatalf("the writer took %d traces (%d MiB) into a %d-byte spool without holding back", sent, sent*8/1024, limit)
			}
			k = next()
		case <-time.After(5 * time.Second):
			blocked = true
		}
	}
	spooled := testutil.ToFloat64(m.spoolBytes)
	t.Logf("writer held back after %d traces; spool %.0f bytes, %v files", sent, spooled, testutil.ToFloat64(m.spoolFiles))
	if testutil.ToFloat64(m.spoolFull) != 1 || testutil.ToFloat64(m.spoolPaused) != 1 {
		t.Errorf("spool_full %v, spool_full_total %v; want 1, 1", testutil.ToFloat64(m.spoolFull), testutil.ToFloat64(m.spoolPaused))
	}
	// At most one open file (1 MiB of rows, less on disk) beyond the cap.
	if spooled < limit || spooled > 2*limit {
		t.Errorf("spool holds %.0f bytes; want between the cap (%d) and twice it", spooled, limit)
	}
	if ratio := testutil.ToFloat64(m.spoolUsage); ratio < 1 {
		t.Errorf("spool usage ratio %v, want >= 1", ratio)
	}
	if !strings.Contains(logs.String(), "archive spool full") {
		t.Errorf("no spool-full warning in the log:\n%s", logs.String())
	}
	// The trace held back is not settled: Kafka would deliver it again.
	if pendings[sent].Settled() {
		t.Error("the trace the writer did not take is settled")
	}

	srv.Restart()
	in <- k // taken once uploads make room
	sent++
	for i := 0; i < 20; i++ {
		in <- next()
		sent++
	}
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := countRows(t, download(t, srv, "spans")); got != sent {
		t.Fatalf("read %d rows back from S3, sent %d", got, sent)
	}
	for i, p := range pendings[:sent] {
		if !p.Settled() {
			t.Fatalf("trace %d not settled after upload", i)
		}
	}
	if testutil.ToFloat64(m.spoolFull) != 0 {
		t.Error("spool_full still 1 after the spool drained")
	}
	if left, _ := filepath.Glob(filepath.Join(spool, "dt=*", "hour=*", "*.parquet")); len(left) != 0 {
		t.Fatalf("spool not drained: %v", left)
	}
}

// TestSpoolNearlyFullWarnsOnce checks the early alarm: from 80% of the cap
// the writer warns, at most once a minute, and the gauges follow.
func TestSpoolNearlyFullWarnsOnce(t *testing.T) {
	var logs syncBuffer
	m := NewMetrics(nil)
	w, err := New(context.Background(), Config{URL: "s3://b/p", SpoolDir: t.TempDir(), SpoolMaxBytes: 10 << 20,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), S3: S3Config{Endpoint: "http://127.0.0.1:1", PathStyle: true}}, m)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	w.now = func() time.Time { return now }
	set := func(b int64) {
		w.up.mu.Lock()
		w.up.bytes = b
		w.up.mu.Unlock()
	}
	set(7 << 20)
	if w.spoolFull() || strings.Contains(logs.String(), "nearly full") {
		t.Fatalf("70%% full: full=%v, log %q", w.full, logs.String())
	}
	set(9 << 20)
	for i := 0; i < 5; i++ {
		if w.spoolFull() {
			t.Fatal("90% reported as full")
		}
	}
	if n := strings.Count(logs.String(), "nearly full"); n != 1 {
		t.Fatalf("%d nearly-full warnings in a burst, want 1:\n%s", n, logs.String())
	}
	if got := testutil.ToFloat64(m.spoolUsage); got != 0.9 {
		t.Fatalf("usage ratio %v, want 0.9", got)
	}
	now = now.Add(time.Minute)
	w.spoolFull()
	if n := strings.Count(logs.String(), "nearly full"); n != 2 {
		t.Fatalf("%d nearly-full warnings after a minute, want 2", n)
	}
	set(10 << 20)
	if !w.spoolFull() || testutil.ToFloat64(m.spoolFull) != 1 {
		t.Fatal("at the cap: not full")
	}
	set(1 << 20)
	if w.spoolFull() || testutil.ToFloat64(m.spoolFull) != 0 || !strings.Contains(logs.String(), "room again") {
		t.Fatal("below the cap again: still full")
	}
}
