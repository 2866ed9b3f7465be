package archive

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tailsift/tailsift/sampler"
)

// TestWriterSealAndCopies: Seal makes what the writer took durable and
// settled long before its roll age. A copy of a span taken lately (its
// Kafka record read again) is not written again, and settles only once the
// file holding the first copy is durable.
func TestWriterSealAndCopies(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	m := NewMetrics(nil)
	w, err := New(ctx, Config{URL: "file://" + dir, NodeID: "n1", RollAge: time.Hour}, m)
	if err != nil {
		t.Fatal(err)
	}
	in := make(chan *sampler.Kept)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, in) }()
	start := time.Now().Add(-time.Minute)
	send := func(src *sampler.Pending, late bool) {
		for _, k := range keptTraces(t, testTraces(start), src, start) {
			k.Late = late
			in <- k
		}
	}

	var first, again, later sampler.Pending
	send(&first, false)
	send(&again, true)
	if first.Settled() || again.Settled() {
		t.Fatal("spans settled before their file was closed")
	}
	if err := w.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	if !first.Settled() || !again.Settled() {
		t.Fatal("spans not settled by Seal")
	}
	// No file is open now: the first copies are durable, a new copy
	// settles at once.
	send(&later, true)
	if err := w.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	if !later.Settled() {
		t.Fatal("a copy of a durable span not settled")
	}

	// The same bytes in another trace are no copy.
	var other sampler.Pending
	k := keptTraces(t, testTraces(start), &other, start)[0]
	k.ID[0] ^= 0xff
	n := len(k.Spans)
	in <- k
	if err := w.Seal(ctx); err != nil {
		t.Fatal(err)
	}

	rows, files := readRows(t, dir)
	total := 0
	for _, f := range files {
		total += int(openParquet(t, f).NumRows())
	}
	if want := 3 + n; n == 0 || len(rows) != 3 || total != want {
		t.Fatalf("%d rows of %d span IDs in %d files, want %d: each of 3 spans once, and the other trace's", total, len(rows), len(files), want)
	}
	if got := testutil.ToFloat64(m.duplicates); got != 6 {
		t.Errorf("tailsift_archive_duplicate_spans_dropped_total = %v, want 6", got)
	}
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// BenchmarkRecentSpans measures what looking for copies adds to each kept
// span the archive takes.
func BenchmarkRecentSpans(b *testing.B) {
	kept, spans := genKept(b, 5_000)
	b.ReportAllocs()
	for b.Loop() {
		var r recentSpans
		for _, k := range kept {
			for i := range k.Spans {
				r.seen(&k.ID, &k.Spans[i])
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*spans), "ns/span")
}
