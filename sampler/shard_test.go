package sampler

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// keepAll keeps every trace with rate 1; dropAll drops every trace.
type fixedPolicy struct{ v Verdict }

func (p fixedPolicy) Name() string          { return "fixed" }
func (p fixedPolicy) Decide(*Trace) Verdict { return p.v }

var (
	keepAll = fixedPolicy{Verdict{Decision: Keep, SampleRate: 1, Reason: "all"}}
	dropAll = fixedPolicy{Verdict{Decision: Drop, Reason: "none"}}
)

// testShard returns a single shard driven by hand, and the channel its kept
// traces go to.
func testShard(t *testing.T, cfg Config, p Policy) (*shard, chan *Kept) {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	out := make(chan *Kept, 1024)
	s := New(cfg, p, out, nil, nil)
	return s.shards[0], out
}

func tid(n byte) TraceID { return TraceID{15: n, 0: 1} }

func item(id TraceID, root, isErr bool, src *Pending) Item {
	var f uint8
	if root {
		f |= FlagRoot
	}
	if isErr {
		f |= FlagError
	}
	if src != nil {
		src.Add(1)
	}
	return Item{TraceID: id, Span: Span{Raw: make([]byte, 100), Scope: &Scope{Service: "svc"}, Src: src, Start: 1, End: 2, Flags: f}}
}

func drain(out chan *Kept) []*Kept {
	var ks []*Kept
	for {
		select {
		case k := <-out:
			ks = append(ks, k)
		default:
			return ks
		}
	}
}

func TestShardCompletion(t *testing.T) {
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	cfg := Config{Shards: 1, QuietPeriod: 2 * time.Second, MaxWait: 10 * time.Second}

	tests := []struct {
		name   string
		spans  func(sh *shard) // adds spans at t0
		checks []struct {
			at   time.Duration
			kept int
		}
	}{
		{
			name: "root and quiet period",
			spans: func(sh *shard) {
				a, b := item(tid(1), false, false, nil), item(tid(1), true, false, nil)
				sh.add(ctx, &a, t0)
				sh.add(ctx, &b, t0)
			},
			checks: []struct {
				at   time.Duration
				kept int
			}{{time.Second, 0}, {2 * time.Second, 1}},
		},
		{
			name: "no root waits for max wait",
			spans: func(sh *shard) {
				a := item(tid(2), false, false, nil)
				sh.add(ctx, &a, t0)
			},
			checks: []struct {
				at   time.Duration
				kept int
			}{{5 * time.Second, 0}, {9 * time.Second, 0}, {10 * time.Second, 1}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sh, out := testShard(t, cfg, keepAll)
			tc.spans(sh)
			total := 0
			for _, c := range tc.checks {
				sh.expire(ctx, t0.Add(c.at))
				total += len(drain(out))
				if total != c.kept {
					t.Fatalf("at +%v: kept %d traces, want %d", c.at, total, c.kept)
				}
			}
		})
	}
}

func TestShardQuietPeriodRestartsOnNewSpan(t *testing.T) {
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	sh, out := testShard(t, Config{Shards: 1, QuietPeriod: 2 * time.Second, MaxWait: 30 * time.Second}, keepAll)
	root := item(tid(1), true, false, nil)
	sh.add(ctx, &root, t0)
	child := item(tid(1), false, false, nil)
	sh.add(ctx, &child, t0.Add(1500*time.Millisecond))
	sh.expire(ctx, t0.Add(2*time.Second))
	if n := len(drain(out)); n != 0 {
		t.Fatalf("decided %d traces 0.5s after the last span, want 0", n)
	}
	sh.expire(ctx, t0.Add(3500*time.Millisecond))
	ks := drain(out)
	if len(ks) != 1 || len(ks[0].Spans) != 2 {
		t.Fatalf("got %d kept traces, want 1 with 2 spans", len(ks))
	}
}

func TestShardSettlesDroppedAndKeptLate(t *testing.T) {
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	sh, out := testShard(t, Config{Shards: 1, QuietPeriod: time.Second, MaxWait: 5 * time.Second}, dropAll)
	var src Pending
	a, b := item(tid(1), true, false, &src), item(tid(1), false, false, &src)
	sh.add(ctx, &a, t0)
	sh.add(ctx, &b, t0)
	if src.Settled() {
		t.Fatal("settled before the decision")
	}
	sh.expire(ctx, t0.Add(time.Second))
	if !src.Settled() {
		t.Fatal("dropped trace did not settle its spans")
	}
	// A late span of the dropped trace settles at once and starts no trace.
	late := item(tid(1), false, false, &src)
	sh.add(ctx, &late, t0.Add(2*time.Second))
	if !src.Settled() || sh.traces.len() != 0 {
		t.Fatalf("late span of dropped trace: settled=%v buffered=%d", src.Settled(), sh.traces.len())
	}

	// Kept trace: late spans are archived with the trace's verdict.
	sh.s.SetPolicy(fixedPolicy{Verdict{Decision: Keep, SampleRate: 20, Reason: "p"}})
	c := item(tid(2), true, false, nil)
	sh.add(ctx, &c, t0)
	sh.expire(ctx, t0.Add(time.Second))
	if ks := drain(out); len(ks) != 1 || ks[0].SampleRate != 20 || ks[0].Late {
		t.Fatalf("kept: %+v", ks)
	}
	d := item(tid(2), false, false, nil)
	sh.add(ctx, &d, t0.Add(3*time.Second))
	sh.expire(ctx, t0.Add(3*time.Second))
	ks := drain(out)
	if len(ks) != 1 || !ks[0].Late || ks[0].SampleRate != 20 || ks[0].Reason != "p" || len(ks[0].Spans) != 1 {
		t.Fatalf("late kept span: %+v", ks)
	}
}

func TestShardSpanLimitAndMemoryBound(t *testing.T) {
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	sh, out := testShard(t, Config{Shards: 1, MaxSpansPerTrace: 10, MaxBufferedBytes: 1 << 20}, keepAll)
	for i := 0; i < 25; i++ {
		it := item(tid(1), false, false, nil)
		sh.add(ctx, &it, t0)
	}
	// The 15 spans after the limit follow the decision as late spans: ten
	// at once when they reach the limit, the other five at the next tick.
	ks := drain(out)
	if len(ks) != 2 || len(ks[0].Spans) != 10 || ks[0].Late || len(ks[1].Spans) != 10 || !ks[1].Late {
		t.Fatalf("span limit: got %d kept, want the decided 10 spans and 10 late ones: %+v", len(ks), ks)
	}
	sh.expire(ctx, t0)
	ks = drain(out)
	if len(ks) != 1 || !ks[0].Late || len(ks[0].Spans) != 5 {
		t.Fatalf("late after limit: %+v", ks)
	}

	// Memory: 1 MiB of 100-byte spans in distinct traces; the oldest go first.
	firstOut := make(chan TraceID, 1)
	stop := make(chan struct{})
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for n := 0; ; n++ {
			select {
			case k := <-out:
				if n == 0 {
					firstOut <- k.ID
				}
				k.Release() // written, as the archive would: it holds no memory now
			case <-stop:
				return
			}
		}
	}()
	for i := 0; i < 20_000; i++ {
		id := TraceID{0: 2, 1: byte(i >> 8), 2: byte(i)}
		it := item(id, false, false, nil)
		sh.add(ctx, &it, t0)
		if sh.bytes > 1<<20 {
			t.Fatalf("buffered %d bytes, over the 1 MiB bound", sh.bytes)
		}
	}
	if first := <-firstOut; first != (TraceID{0: 2}) {
		t.Fatalf("memory pressure decided %x first, want the oldest trace", first)
	}
	// At the bound input pauses, and with it the input clock: a tick with no
	// time passed still makes room, down to 80%, so input can resume.
	if !sh.s.Full() {
		t.Fatalf("buffer at %d of %d bytes not reported full", sh.bytes, 1<<20)
	}
	sh.expire(ctx, t0)
	close(stop)
	<-drained
	if sh.bytes > (1<<20)/10*8 || sh.s.Full() {
		t.Fatalf("after a tick at the bound: %d bytes buffered, full=%v; want at most 80%% of %d", sh.bytes, sh.s.Full(), 1<<20)
	}
}

func TestSamplerRunFlush(t *testing.T) {
	cfg := Config{Shards: 4}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	out := make(chan *Kept, 1024)
	s := New(cfg, keepAll, out, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	var src Pending
	var items []Item
	for i := 0; i < 100; i++ {
		items = append(items, item(TraceID{0: 1, 1: byte(i)}, false, false, &src))
	}
	if err := s.Add(ctx, items); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got := 0
	for len(out) > 0 {
		k := <-out
		got += len(k.Spans)
		k.Release()
	}
	if got != 100 || !src.Settled() {
		t.Fatalf("after Flush: %d spans kept, settled=%v; want 100, true", got, src.Settled())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, ok := <-out; ok {
		t.Fatal("Run did not close the output channel")
	}
}

// BenchmarkShardAdd measures buffering one span (the map insert or update).
func BenchmarkShardAdd(b *testing.B) {
	cfg := Config{Shards: 1, MaxBufferedBytes: 1 << 40}
	_ = cfg.Validate()
	out := make(chan *Kept, 1)
	s := New(cfg, dropAll, out, nil, nil)
	sh := s.shards[0]
	now := time.Now()
	ctx := context.Background()
	its := make([]Item, 1<<16)
	for i := range its {
		its[i] = Item{TraceID: TraceID{0: 1, 1: byte(i >> 12), 2: byte(i >> 4)}, Span: Span{Raw: make([]byte, 200), Scope: &Scope{}}}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i&(1<<16-1) == 0 && i > 0 {
			b.StopTimer()
			sh.flush(ctx, now)
			b.StartTimer()
		}
		sh.add(ctx, &its[i&(1<<16-1)], now)
	}
}

// benchTraces returns one span (260 bytes, one scope) of each of n traces;
// the span benchmarks add it again and again for the traces' other spans.
func benchTraces(n int) []Item {
	scope := &Scope{Service: "svc"}
	raw := make([]byte, 260)
	its := make([]Item, n)
	for i := range its {
		its[i] = Item{TraceID: TraceID{0: 1, 1: byte(i >> 16), 2: byte(i >> 8), 3: byte(i)},
			Span: Span{Raw: raw, Scope: scope, Start: 1, End: 2}}
	}
	return its
}

// BenchmarkExpire buffers traces of 8 spans whose spans arrive interleaved
// with other traces' (as from Kafka), then decides them all once quiet, as
// the tick does, with the span records read ahead for 16 traces at a time
// (batch=16) and one trace at a time (batch=1). ns/op is per span; 150,000
// traces of spans of 260 bytes (about 350 MB) put the records out of cache
// by the time they are decided.
func BenchmarkExpire(b *testing.B) {
	const traces, spansPer = 150_000, 8
	for _, batch := range []int{1, 16} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			defer func(n int) { decideBatch = n }(decideBatch)
			decideBatch = batch
			cfg := Config{Shards: 1, MaxBufferedBytes: 1 << 40, QuietPeriod: time.Second}
			_ = cfg.Validate()
			s := New(cfg, dropAll, make(chan *Kept, 1), nil, nil)
			sh := s.shards[0]
			ctx := context.Background()
			its := benchTraces(traces)
			now := time.Unix(1000, 0)
			b.ReportAllocs()
			b.ResetTimer()
			for n := 0; n < b.N; n += traces * spansPer {
				b.StopTimer()
				for j := range spansPer {
					for i := range its {
						its[i].Span.Flags = 0
						if j == 0 {
							its[i].Span.Flags = FlagRoot
						}
						sh.add(ctx, &its[i], now)
					}
				}
				b.StartTimer()
				sh.expire(ctx, now.Add(2*time.Second))
			}
			if sh.traces.len() != 0 {
				b.Fatalf("%d traces left undecided", sh.traces.len())
			}
		})
	}
}

// BenchmarkShardAddInterleaved buffers the spans of 150,000 traces in
// turns, one span of each trace after the other, as spans arrive from
// Kafka, so a trace's previous span was stored about 45 MB before. ns/op is
// per span. In "fresh" every round starts a new sampler, so span bytes go
// to memory the process has never touched; in "reused" the shard's arena
// has held a round before. The difference is what first touches cost: on a
// virtual machine, where a fresh page is a fault and the page cleared,
// several times the rest of buffering a span.
func BenchmarkShardAddInterleaved(b *testing.B) {
	const traces, spansPer = 150_000, 8
	cfg := Config{Shards: 1, MaxBufferedBytes: 1 << 40}
	_ = cfg.Validate()
	ctx := context.Background()
	its := benchTraces(traces)
	now := time.Unix(1000, 0)
	round := func(sh *shard) {
		for range spansPer {
			for i := range its { // as the shard loop adds a batch
				sh.readAhead(its, i)
				sh.add(ctx, &its[i], now)
			}
		}
	}
	defer func(n int) { addAhead = n }(addAhead)
	for _, fresh := range []bool{true, false} {
		for _, ahead := range []int{1, 16} {
			name := map[bool]string{true: "fresh", false: "reused"}[fresh] + fmt.Sprintf("/ahead=%d", ahead)
			b.Run(name, func(b *testing.B) {
				addAhead = ahead
				newShard := func() *shard { return New(cfg, dropAll, make(chan *Kept, 1), nil, nil).shards[0] }
				sh := newShard()
				if !fresh {
					round(sh)
					sh.flush(ctx, now)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for n := 0; n < b.N; n += traces * spansPer {
					round(sh)
					b.StopTimer()
					sh.flush(ctx, now)
					if fresh {
						sh.arena.close()
						sh = newShard()
					}
					b.StartTimer()
				}
			})
		}
	}
}

func TestSamplerHandoff(t *testing.T) {
	cfg := Config{Shards: 3}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	out := make(chan *Kept, 16)
	s := New(cfg, keepAll, out, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	var items []Item
	for i := 0; i < 50; i++ {
		items = append(items, item(TraceID{0: 1, 15: byte(i)}, false, false, nil), item(TraceID{0: 1, 15: byte(i)}, false, false, nil))
	}
	if err := s.Add(ctx, items); err != nil {
		t.Fatal(err)
	}
	odd := func(id *TraceID) bool { return id[15]%2 == 0 }
	s.SetOwner(odd)
	got, err := s.Handoff(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 50 {
		t.Fatalf("handed off %d spans, want 50", len(got))
	}
	for _, it := range got {
		if odd(&it.TraceID) {
			t.Fatalf("handed off trace %x that stays", it.TraceID)
		}
	}
	if b := s.BufferedBytes(); b != 50*100 {
		t.Fatalf("buffered bytes after handoff = %d, want %d", b, 50*100)
	}
}

// inputClock is an InputClock moved by hand.
type inputClock struct{ now atomic.Int64 }

func (c *inputClock) Now() time.Time { return time.Unix(0, c.now.Load()) }

// TestSamplerWaitsForInputClock: with an input clock, a trace whose spans
// were written at T is not decided until the input clock (the slowest
// partition) passes T plus the quiet period, however long that takes on
// the wall clock.
func TestSamplerWaitsForInputClock(t *testing.T) {
	in := &inputClock{}
	written := time.Now().Add(-time.Hour)
	in.now.Store(written.UnixNano())
	cfg := Config{Shards: 1, QuietPeriod: time.Second, MaxWait: 5 * time.Second, TickInterval: 5 * time.Millisecond, InputClock: in}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	out := make(chan *Kept, 16)
	s := New(cfg, keepAll, out, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	src := &Pending{TS: written.UnixNano()}
	if err := s.Add(ctx, []Item{item(tid(1), true, false, src), item(tid(1), false, false, src)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // an hour after the spans were written, by the wall clock
	if len(out) != 0 {
		t.Fatal("decided while the input clock had not moved")
	}
	in.now.Store(written.Add(900 * time.Millisecond).UnixNano())
	time.Sleep(50 * time.Millisecond)
	if len(out) != 0 {
		t.Fatal("decided before the quiet period passed in input time")
	}
	in.now.Store(written.Add(1100 * time.Millisecond).UnixNano())
	select {
	case k := <-out:
		if len(k.Spans) != 2 || time.Since(k.DecidedAt) > time.Minute {
			t.Fatalf("kept %d spans, decided at %v; want 2, by the wall clock", len(k.Spans), k.DecidedAt)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not decided after the input clock passed the quiet period")
	}
}

// TestLateSpansFollowDecisionsUpToHorizon: a late span follows its trace's
// decision as long as the decision cache remembers it (DecisionCacheSize
// dropped traces, a quarter as many kept ones) and starts a new trace once
// the decision is forgotten.
func TestLateSpansFollowDecisionsUpToHorizon(t *testing.T) {
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	const size = 64
	for _, c := range []struct {
		name    string
		policy  Policy
		horizon int
	}{{"dropped", dropAll, size}, {"kept", fixedPolicy{Verdict{Decision: Keep, SampleRate: 7, Reason: "p"}}, size / 4}} {
		t.Run(c.name, func(t *testing.T) {
			sh, out := testShard(t, Config{Shards: 1, QuietPeriod: time.Second, MaxWait: 5 * time.Second, DecisionCacheSize: size}, c.policy)
			decide := func(from, to int, at time.Time) {
				for n := from; n <= to; n++ {
					it := item(tid(byte(n)), true, false, nil)
					sh.add(ctx, &it, at)
				}
				sh.expire(ctx, at.Add(time.Second))
				drain(out)
			}
			decide(1, c.horizon, t0)
			// The oldest decision is at the horizon: a late span follows it.
			var src Pending
			late := item(tid(1), false, false, &src)
			sh.add(ctx, &late, t0.Add(time.Minute))
			if sh.traces.len() != 0 {
				t.Fatalf("late span at the horizon started a new trace")
			}
			if c.policy == dropAll && !src.Settled() {
				t.Fatal("late span of a dropped trace not settled at once")
			}
			if c.policy != dropAll {
				sh.expire(ctx, t0.Add(time.Minute))
				ks := drain(out)
				if len(ks) != 1 || !ks[0].Late || ks[0].SampleRate != 7 || ks[0].Reason != "p" {
					t.Fatalf("late span of a kept trace: %+v", ks)
				}
				ks[0].Release()
			}
			// One more decision pushes trace 1 past the horizon.
			decide(c.horizon+1, c.horizon+1, t0.Add(time.Minute))
			again := item(tid(1), false, false, nil)
			sh.add(ctx, &again, t0.Add(2*time.Minute))
			if sh.traces.len() != 1 {
				t.Fatalf("span past the horizon: %d traces buffered, want a new one", sh.traces.len())
			}
		})
	}
}

// TestShardCopiesSpanBytes checks that a buffered span owns its bytes: the
// record it came in may be reused or freed at once, and a span larger than
// an arena chunk's share is copied too.
func TestShardCopiesSpanBytes(t *testing.T) {
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	sh, out := testShard(t, Config{Shards: 1}, keepAll)
	record := make([]byte, 3*arenaMaxCopy)
	for i := range record {
		record[i] = byte(i)
	}
	small, big := item(tid(1), true, false, nil), item(tid(1), false, false, nil)
	small.Span.Raw = record[:100]
	big.Span.Raw = record[100 : 100+2*arenaMaxCopy]
	sh.add(ctx, &small, t0)
	sh.add(ctx, &big, t0)
	want := bytes.Clone(record)
	clear(record)
	sh.flush(ctx, t0)
	ks := drain(out)
	if len(ks) != 1 || len(ks[0].Spans) != 2 {
		t.Fatalf("got %d kept traces, want 1 with 2 spans", len(ks))
	}
	if got := ks[0].Spans[0].Raw; !bytes.Equal(got, want[:100]) || cap(got) != 100 {
		t.Errorf("small span: %d bytes (cap %d) changed with its record", len(got), cap(got))
	}
	if got := ks[0].Spans[1].Raw; !bytes.Equal(got, want[100:100+2*arenaMaxCopy]) {
		t.Errorf("large span changed with its record")
	}
}

// TestShardStoresSpansWithoutTraceID checks that a span whose bytes begin
// or end with its trace's ID is buffered 18 bytes shorter, that policies
// see it so, and that it leaves the shard (kept, or set aside for another
// node) byte for byte as it came. A span with another trace ID there (or
// none) is buffered whole.
func TestShardStoresSpansWithoutTraceID(t *testing.T) {
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	id := tid(7)
	rest := []byte{0x12, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0x2a, 3, 'g', 'e', 't'} // span_id, name
	withID := append(append([]byte{0x0a, 16}, id[:]...), rest...)
	other := tid(9)
	withOther := append(append([]byte{0x0a, 16}, other[:]...), rest...)
	trailing := append(append(bytes.Clone(rest), 0x0a, 16), id[:]...) // as pdata writes it
	for _, setAside := range []bool{false, true} {
		policy := &spanLengths{}
		sh, out := testShard(t, Config{Shards: 1}, policy)
		for _, raw := range [][]byte{withID, withOther, rest, trailing} {
			it := item(id, false, false, nil)
			it.Span.Raw = bytes.Clone(raw)
			sh.add(ctx, &it, t0)
		}
		got := spansLeaving(t, sh, out, id, t0, setAside)
		if len(got) != 4 {
			t.Fatalf("set aside %v: %d spans left the shard, want 4", setAside, len(got))
		}
		if want := []int{len(rest), len(withOther), len(rest), len(rest)}; !setAside && !slices.Equal(policy.seen, want) {
			t.Errorf("policy saw spans of %v bytes, want %v", policy.seen, want)
		}
		for i, want := range [][]byte{withID, withOther, rest, trailing} {
			if !bytes.Equal(got[i].Raw, want) || got[i].Flags&flagNoTraceID != 0 {
				t.Errorf("set aside %v: span %d left as % x (flags %b), want % x", setAside, i, got[i].Raw, got[i].Flags, want)
			}
		}
	}
}

// TestShardStoresSpansWithoutTimes buffers spans whose start and end time
// fields, side by side, the scanner has pointed to (Span.TimesAt): the
// policy sees each span 18 bytes shorter, with the times still in
// Span.Start and Span.End, and the spans leave the shard (kept, or set
// aside for another node) byte for byte as they came, trace_id field and
// all. Where the hint is wrong, points elsewhere, or the fields hold other
// values than Start and End, the span is buffered whole.
func TestShardStoresSpansWithoutTimes(t *testing.T) {
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	id := tid(7)
	const start, end = 1_700_000_000_000_000_001, 1_700_000_000_500_000_002
	field := func(tag byte, v uint64) []byte { return binary.LittleEndian.AppendUint64([]byte{tag}, v) }
	traceID := append([]byte{0x0a, 16}, id[:]...)
	spanID := []byte{0x12, 8, 1, 2, 3, 4, 5, 6, 7, 8}
	name := []byte{0x2a, 3, 'g', 'e', 't'}
	times := slices.Concat(field(0x39, start), field(0x41, end))
	timesEndFirst := slices.Concat(field(0x41, end), field(0x39, start))
	cases := []struct {
		name    string
		raw     []byte
		timesAt int // the scanner's hint, -1 none
		short   int // bytes the policy sees fewer of
	}{
		{"protobuf-go order", slices.Concat(traceID, spanID, name, times), 33, 36},
		{"pdata order", slices.Concat(timesEndFirst, name, spanID, traceID), 0, 36},
		{"no trace ID", slices.Concat(spanID, times, name), 10, 18},
		{"no hint", slices.Concat(spanID, times, name), -1, 0},
		{"hint elsewhere", slices.Concat(spanID, times, name), 9, 0},
		{"other values", slices.Concat(spanID, field(0x39, start+1), field(0x41, end), name), 10, 0},
		{"hint past the end", slices.Concat(spanID, name), 12, 0},
	}
	for _, setAside := range []bool{false, true} {
		policy := &spanLengths{}
		sh, out := testShard(t, Config{Shards: 1}, policy)
		for _, tc := range cases {
			it := item(id, false, false, nil)
			it.Span.Raw = bytes.Clone(tc.raw)
			it.Span.Start, it.Span.End = start, end
			it.Span.TimesAt = uint16(tc.timesAt + 1)
			sh.add(ctx, &it, t0)
		}
		got := spansLeaving(t, sh, out, id, t0, setAside)
		for i, tc := range cases {
			if want := len(tc.raw) - tc.short; !setAside && policy.seen[i] != want {
				t.Errorf("%s: the policy saw %d bytes, want %d", tc.name, policy.seen[i], want)
			}
		}
		if len(got) != len(cases) {
			t.Fatalf("set aside %v: %d spans left the shard, want %d", setAside, len(got), len(cases))
		}
		for i, tc := range cases {
			g := &got[i]
			if !bytes.Equal(g.Raw, tc.raw) || g.Flags&(flagNoTraceID|flagNoTimes|flagEndFirst) != 0 || g.TimesAt != 0 ||
				g.Start != start || g.End != end {
				t.Errorf("set aside %v, %s: left as % x (flags %b, times at %d, %d..%d), want % x",
					setAside, tc.name, g.Raw, g.Flags, g.TimesAt, g.Start, g.End, tc.raw)
			}
		}
	}
}

// spansLeaving flushes sh, whose buffer holds trace id alone, and returns
// the spans that left it: set aside for another node (setAside), or kept.
func spansLeaving(t *testing.T, sh *shard, out chan *Kept, id TraceID, now time.Time, setAside bool) []Span {
	t.Helper()
	if !setAside {
		sh.flush(context.Background(), now)
		ks := drain(out)
		if len(ks) != 1 {
			t.Fatalf("%d kept traces, want 1", len(ks))
		}
		return ks[0].Spans
	}
	sh.s.SetOwner(func(*TraceID) bool { return false })
	sh.flush(context.Background(), now)
	var got []Span
	for _, it := range sh.s.TakeAside() {
		if it.TraceID != id {
			t.Fatalf("set aside a span of trace %x, want %x", it.TraceID, id)
		}
		got = append(got, it.Span)
	}
	return got
}

// spanLengths keeps every trace and notes the length of each span's bytes.
type spanLengths struct{ seen []int }

func (p *spanLengths) Name() string { return "span-lengths" }
func (p *spanLengths) Decide(tr *Trace) Verdict {
	for i := range tr.Spans {
		p.seen = append(p.seen, len(tr.Spans[i].Raw))
	}
	return Verdict{Decision: Keep, SampleRate: 1, Reason: "test"}
}

// TestDecisionCacheBounds checks that the cache, which grows as it is used,
// stops at its bounds and forgets the oldest decisions first.
func TestDecisionCacheBounds(t *testing.T) {
	c := newDecisionCache(16) // 16 dropped, 4 kept
	id := func(i int) TraceID { return TraceID{8: byte(i), 9: byte(i >> 8), 15: 1} }
	for i := 0; i < 40; i++ {
		c.addDropped(id(i))
		c.addKept(id(1000+i), &KeptDecision{})
	}
	if n := c.len(); n != 16+4 {
		t.Fatalf("holds %d decisions, want 20", n)
	}
	if _, dropped := c.lookup(id(23)); dropped {
		t.Error("trace 23 is remembered; the 16 newest are 24..39")
	}
	if _, dropped := c.lookup(id(24)); !dropped {
		t.Error("trace 24 is forgotten")
	}
	if d, _ := c.lookup(id(1035)); d != nil {
		t.Error("kept trace 1035 is remembered; the 4 newest are 1036..1039")
	}
	if d, _ := c.lookup(id(1039)); d == nil {
		t.Error("kept trace 1039 is forgotten")
	}
}

// evenKept keeps the traces whose last ID byte is even.
type evenKept struct{}

func (evenKept) Name() string { return "even" }
func (evenKept) Decide(t *Trace) Verdict {
	if t.ID[15]%2 == 0 {
		return keepAll.v
	}
	return dropAll.v
}

// TestShardArenaReusesChunks checks the shard's span arena: chunks freed by
// decided traces are filled again, so a steady stream buffers in a few
// chunks however many spans pass, the bytes of kept traces, which leave the
// shard, stay as they were while the chunks they came from are reused, and
// the scopes and input units of decided spans are let go.
func TestShardArenaReusesChunks(t *testing.T) {
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	sh, out := testShard(t, Config{Shards: 1}, evenKept{})
	fill := func(id TraceID, i int) []byte {
		b := make([]byte, 300)
		for j := range b {
			b[j] = id[14] ^ id[15] ^ byte(i*7+j)
		}
		return b
	}
	var kept []*Kept
	const rounds, traces, spans = 40, 50, 10 // 6 MB through the arena
	for r := range rounds {
		for n := range traces {
			id := TraceID{0: 1, 14: byte(r), 15: byte(n)}
			for i := range spans {
				it := item(id, i == 0, false, nil)
				it.Span.Raw = fill(id, i)
				sh.add(ctx, &it, t0)
			}
		}
		sh.flush(ctx, t0)
		kept = append(kept, drain(out)...)
	}
	if len(kept) != rounds*traces/2 {
		t.Fatalf("kept %d traces, want %d", len(kept), rounds*traces/2)
	}
	for _, k := range kept {
		for i := range k.Spans {
			if !bytes.Equal(k.Spans[i].Raw, fill(k.ID, i)) {
				t.Fatalf("trace %x span %d: bytes changed after its trace left the shard", k.ID, i)
			}
		}
	}
	// One round is 170 KB with the span records, three chunks; a chunk
	// or two more for the round boundary.
	if a := &sh.arena; len(a.chunks) > 5 || a.live != 0 {
		t.Errorf("arena used %d chunks with %d still live for rounds of 3 chunks, want at most 5 and 0", len(a.chunks), a.live)
	}
	if len(sh.scopes.index) != 0 || len(sh.srcs.index) != 0 {
		t.Errorf("%d scopes and %d input units still referenced with nothing buffered", len(sh.scopes.index), len(sh.srcs.index))
	}
}

// TestShardHugeSpan checks a span too long for a span record's length
// field: its length comes from the chunk it has to itself.
func TestShardHugeSpan(t *testing.T) {
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	sh, out := testShard(t, Config{Shards: 1}, keepAll)
	it := item(tid(1), true, true, nil)
	it.Span.Raw = make([]byte, bigLen+10)
	it.Span.Raw[len(it.Span.Raw)-1] = 7
	it.Span.Start, it.Span.End = -5, 1<<40
	sh.add(ctx, &it, t0)
	sh.flush(ctx, t0)
	ks := drain(out)
	if len(ks) != 1 || len(ks[0].Spans) != 1 {
		t.Fatalf("got %d kept traces, want 1 with 1 span", len(ks))
	}
	sp := ks[0].Spans[0]
	if !bytes.Equal(sp.Raw, it.Span.Raw) || sp.Start != -5 || sp.End != 1<<40 || !sp.Root() || !sp.Error() {
		t.Errorf("span of %d bytes came back as %d bytes, start %d, end %d, flags %b", len(it.Span.Raw), len(sp.Raw), sp.Start, sp.End, sp.Flags)
	}
}

// TestSpanSize keeps Span at 64 bytes on 64-bit platforms: it is the
// per-span overhead of every batch between the consumer and the shards.
func TestSpanSize(t *testing.T) {
	if n := unsafe.Sizeof(Span{}); unsafe.Sizeof(uintptr(0)) == 8 && n != 64 {
		t.Fatalf("Span is %d bytes, want 64", n)
	}
}
