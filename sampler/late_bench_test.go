package sampler

import (
	"context"
	"testing"
	"time"
)

// BenchmarkLateSpan is the path of a span whose trace was already decided
// and dropped: an ordinary span, and an error span that would have kept it.
func BenchmarkLateSpan(b *testing.B) {
	for _, isErr := range []bool{false, true} {
		b.Run(map[bool]string{false: "plain", true: "error"}[isErr], func(b *testing.B) {
			ctx := context.Background()
			t0 := time.Unix(1_700_000_000, 0)
			lat, err := NewLatencyPolicy(2 * time.Second)
			if err != nil {
				b.Fatal(err)
			}
			cfg := Config{Shards: 1, QuietPeriod: time.Second, MaxWait: 10 * time.Second}
			if err := cfg.Validate(); err != nil {
				b.Fatal(err)
			}
			sh := New(cfg, Chain{ErrorPolicy{}, lat, dropAll}, make(chan *Kept, 1), nil, nil).shards[0]
			const traces = 1024
			items := make([]Item, traces)
			for i := range items {
				id := TraceID{0: 1, 1: byte(i), 2: byte(i >> 8)}
				root := item(id, true, false, nil)
				sh.add(ctx, &root, t0)
				items[i] = item(id, false, isErr, nil)
			}
			sh.expire(ctx, t0.Add(time.Second))
			now := t0.Add(2 * time.Second)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				sh.add(ctx, &items[i%traces], now)
			}
			sh.publish()
		})
	}
}
