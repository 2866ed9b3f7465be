package archive

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tailsift/tailsift/router"
	"github.com/tailsift/tailsift/sampler"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// TestWriterHeldTracesCountAgainstMemoryBound runs a sampler into a writer
// as a node does: kept traces count against the sampler's memory bound
// while the writer holds them unwritten, enough here to make the node full;
// at its next tick the writer, seeing the pressure, writes them as a row
// group (the file stays open) and the count returns to 0.
func TestWriterHeldTracesCountAgainstMemoryBound(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	raw, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(testTraces(time.Now().Add(-time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	// The same two traces scanned again and again, past the bound's
	// smallest setting, 1 MiB. The archive writes each span once: the
	// rest are copies of it.
	sc, _ := router.NewScanner("")
	src := &sampler.Pending{}
	var items []sampler.Item
	spanBytes, distinct := 0, 0
	for spanBytes < 3<<20/2 {
		its, err := sc.Scan(raw, src)
		if err != nil {
			t.Fatal(err)
		}
		distinct = len(its)
		for i := range its {
			spanBytes += len(its[i].Span.Raw)
		}
		items = append(items, its...)
	}
	src.Add(len(items))

	// The spans alone fill the bound to 95%: kept, with their Span
	// values, they pass the 90% at which the node is full.
	cfg := sampler.Config{Shards: 1, MaxBufferedBytes: int64(spanBytes) * 100 / 95, MaxSpansPerTrace: len(items)}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	keep, _ := sampler.NewProbabilisticPolicy(1)
	kept := make(chan *sampler.Kept, 16)
	s := sampler.New(cfg, keep, kept, nil, nil)
	smpCtx, stopSampler := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { s.Run(smpCtx) })

	dir := t.TempDir()
	w, err := New(ctx, Config{URL: "file://" + dir, NodeID: "n1", RollAge: time.Hour, Pressure: s.Full}, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, kept) }()

	if err := s.Add(ctx, items); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.KeptBytes(); got < int64(spanBytes) {
		t.Fatalf("kept traces count %d bytes against the bound, less than their %d bytes of spans", got, spanBytes)
	}
	for s.KeptBytes() != 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("the writer never wrote the traces it held: %d bytes still counted, full=%v", s.KeptBytes(), s.Full())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if s.Full() {
		t.Error("still full with nothing buffered or held")
	}
	if src.Settled() {
		t.Error("spans settled before their file is durable")
	}

	stopSampler() // closes kept: the writer closes its file
	wg.Wait()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_, files := readRows(t, dir)
	n := 0
	for _, f := range files {
		n += int(openParquet(t, f).NumRows())
	}
	if n != distinct {
		t.Fatalf("%d rows archived, want %d (each of the %d spans once)", n, distinct, distinct)
	}
	if !src.Settled() {
		t.Error("spans not settled once their file is durable")
	}
}
