package sampler

import (
	"context"
	"testing"
	"time"
)

// TestKeptTracesCountAgainstBound checks that kept traces count against
// the memory bound from when a shard sends them out until they are
// released, so that a node whose archive lags is full although its buffer
// is empty.
func TestKeptTracesCountAgainstBound(t *testing.T) {
	ctx := context.Background()
	const bound = 1 << 20
	sh, out := testShard(t, Config{Shards: 1, MaxBufferedBytes: bound, MaxSpansPerTrace: 1 << 20}, keepAll)
	src := &Pending{}
	for range bound / 100 { // 100-byte spans of one trace: the bound's worth
		it := item(tid(3), false, false, src)
		sh.add(ctx, &it, time.Unix(1_700_000_000, 0))
	}
	sh.flush(ctx, time.Unix(1_700_000_000, 0))
	sh.publish()
	ks := drain(out)
	if len(ks) != 1 {
		t.Fatalf("%d kept, want 1", len(ks))
	}
	s := sh.s
	if want := int64(len(ks[0].Spans)) * (100 + spanOverhead); s.BufferedBytes() != 0 || s.KeptBytes() != want || !s.Full() {
		t.Fatalf("buffered %d, kept %d bytes (want 0, %d), full=%v", s.BufferedBytes(), s.KeptBytes(), want, s.Full())
	}
	ks[0].Hold(ks[0].Held() / 2) // the archive, holding less of it
	if s.KeptBytes() != ks[0].Held() || s.Full() {
		t.Fatalf("kept %d bytes, held %d, full=%v", s.KeptBytes(), ks[0].Held(), s.Full())
	}
	ks[0].Release()
	if s.KeptBytes() != 0 || !src.Settled() {
		t.Fatalf("after release: kept %d bytes, settled=%v", s.KeptBytes(), src.Settled())
	}
}
