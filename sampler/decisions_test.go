package sampler

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"testing"
)

// mapDecisionCache is the decision cache as it was before dropped decisions
// moved to a keySet: a Go map beside the FIFO. It is the reference the
// keySet's behaviour is checked against and the baseline of its benchmark.
// Kept decisions, which did not change, are the embedded cache's.
type mapDecisionCache struct {
	*decisionCache
	dropped  map[uint64]struct{}
	dropFIFO []uint64
	dropHead int
}

func newMapDecisionCache(size int) *mapDecisionCache {
	return &mapDecisionCache{decisionCache: newDecisionCache(size), dropped: make(map[uint64]struct{})}
}

func (c *mapDecisionCache) addDropped(id TraceID) {
	k := cacheKey(id)
	if _, ok := c.dropped[k]; ok {
		return
	}
	c.dropped[k] = struct{}{}
	c.dropHead = push(&c.dropFIFO, c.dropHead, c.dropMax, k, func(old uint64) { delete(c.dropped, old) })
}

func (c *mapDecisionCache) lookup(id TraceID) (kept *KeptDecision, dropped bool) {
	k := cacheKey(id)
	if d, ok := c.kept[k]; ok {
		return d, false
	}
	_, dropped = c.dropped[k]
	return nil, dropped
}

func (c *mapDecisionCache) len() int { return len(c.dropped) + len(c.kept) }

// keyID returns a trace ID whose cache key is k and whose high half is
// random, as it is for the senders that fill only the low half.
func keyID(k uint64, r *rand.Rand) TraceID {
	var id TraceID
	binary.LittleEndian.PutUint64(id[:8], r.Uint64())
	binary.LittleEndian.PutUint64(id[8:], k)
	return id
}

// checkKeySet fails unless every key in s is found from its home slot
// without crossing an empty slot (what a deletion that cut a probe run
// would break), s.n counts the keys, and the table is no larger than the
// smallest that holds them within keySetLoad.
func checkKeySet(t *testing.T, s *keySet, held int) {
	t.Helper()
	mask := uint64(len(s.slots) - 1)
	n := 0
	for j, k := range s.slots {
		if k == 0 {
			continue
		}
		n++
		for i := s.home(k); i != uint64(j); i = (i + 1) & mask {
			if s.slots[i] == 0 {
				t.Fatalf("key %#x in slot %d: empty slot %d between it and its home %d", k, j, i, s.home(k))
			}
		}
	}
	if n != s.n {
		t.Fatalf("%d keys in the table, n = %d", n, s.n)
	}
	if want := keySetSlotsFor(held); len(s.slots) > want {
		t.Fatalf("%d slots for %d keys at most; %d would hold them", len(s.slots), held, want)
	}
}

// keySetSlotsFor returns the table size a keySet grows to for n keys.
func keySetSlotsFor(n int) int {
	slots := keySetMinSlots
	for n*keySetLoadDen > slots*keySetLoadNum {
		slots *= 2
	}
	return slots
}

// TestDecisionCacheMatchesMaps runs random adds and lookups against the
// cache and against mapDecisionCache, with caches small enough that nearly
// every add evicts and the table's probe runs are long, and keys drawn from
// small pools so that re-adds, hits and evicted keys all come up often. The
// pools include sequential keys, key 0 and keys that use one half only.
func TestDecisionCacheMatchesMaps(t *testing.T) {
	pools := map[string]func(n uint64) uint64{
		"random":     func(n uint64) uint64 { return splitmix(n) },
		"sequential": func(n uint64) uint64 { return n },
		"high-half":  func(n uint64) uint64 { return n << 32 },
		"top-byte":   func(n uint64) uint64 { return n<<56 | 1 },
		"mixed": func(n uint64) uint64 {
			switch n % 3 {
			case 0:
				return n / 3
			case 1:
				return (n / 3) << 40
			}
			return splitmix(n)
		},
	}
	for name, key := range pools {
		for _, size := range []int{16, 37, 200} {
			t.Run(fmt.Sprintf("%s/%d", name, size), func(t *testing.T) {
				r := rand.New(rand.NewPCG(uint64(size), 7))
				c, ref := newDecisionCache(size), newMapDecisionCache(size)
				c.dropped.seed = r.Uint64()
				pool := uint64(3 * size)
				for op := range 20_000 {
					id := keyID(key(r.Uint64N(pool)), r)
					switch x := r.IntN(10); {
					case x < 5:
						c.addDropped(id)
						ref.addDropped(id)
					case x < 6:
						d := &KeptDecision{}
						c.addKept(id, d)
						ref.addKept(id, d)
					}
					gotK, gotD := c.lookup(id)
					wantK, wantD := ref.lookup(id)
					if gotK != wantK || gotD != wantD {
						t.Fatalf("op %d: lookup(%#x) = %p, %v; the maps say %p, %v", op, cacheKey(id), gotK, gotD, wantK, wantD)
					}
					if c.len() != ref.len() {
						t.Fatalf("op %d: holds %d decisions, the maps %d", op, c.len(), ref.len())
					}
					if op%97 == 0 {
						checkKeySet(t, &c.dropped, size+1)
						for n := range pool {
							k := key(n)
							if got, want := c.dropped.has(k), hasKey(ref.dropped, k); got != want {
								t.Fatalf("op %d: has(%#x) = %v, the map says %v", op, k, got, want)
							}
						}
					}
				}
				if c.len() < size {
					t.Fatalf("holds %d decisions after 20000 operations; bound %d was never reached", c.len(), size)
				}
			})
		}
	}
}

func hasKey(m map[uint64]struct{}, k uint64) bool { _, ok := m[k]; return ok }

// TestDecisionCacheGrowsFromEmpty checks that a cache with a large bound
// starts small, grows with the decisions it holds, and stops growing at its
// bound however many more decisions are made.
func TestDecisionCacheGrowsFromEmpty(t *testing.T) {
	const size = 5000
	c := newDecisionCache(size)
	if len(c.dropped.slots) != keySetMinSlots || cap(c.dropFIFO) != 0 {
		t.Fatalf("a new cache has %d slots and a FIFO of %d", len(c.dropped.slots), cap(c.dropFIFO))
	}
	r := rand.New(rand.NewPCG(1, 2))
	sizes := map[int]bool{}
	for n := 1; n <= 10*size; n++ {
		c.addDropped(keyID(splitmix(uint64(n)), r))
		held := min(n, size)
		if c.len() != held {
			t.Fatalf("after %d decisions the cache holds %d, want %d", n, c.len(), held)
		}
		if got, want := len(c.dropped.slots), keySetSlotsFor(min(n, size+1)); got != want {
			t.Fatalf("after %d decisions the table has %d slots, want %d", n, got, want)
		}
		sizes[len(c.dropped.slots)] = true
	}
	checkKeySet(t, &c.dropped, size+1)
	if len(c.dropFIFO) != size {
		t.Fatalf("FIFO of %d keys, bound %d", len(c.dropFIFO), size)
	}
	if want := bits.Len(uint(keySetSlotsFor(size+1) / keySetMinSlots)); len(sizes) != want {
		t.Fatalf("the table took %d sizes on its way to %d slots, want %d", len(sizes), keySetSlotsFor(size+1), want)
	}
	// The newest decisions are remembered and the oldest forgotten.
	r = rand.New(rand.NewPCG(1, 2))
	for n := 1; n <= 10*size; n++ {
		_, dropped := c.lookup(keyID(splitmix(uint64(n)), r))
		if want := n > 9*size; dropped != want {
			t.Fatalf("decision %d of %d: remembered %v, want %v", n, 10*size, dropped, want)
		}
	}
}

// TestKeySetSpreadsPatternedKeys checks that keys which differ in a few bits
// only, sequential or in one half of the key, do not gather in long probe
// runs: the mean probes of a hit stay near what random keys give
// (½(1+1/(1-α)), under 2 at the load this table reaches), with no seed and
// with a random one.
func TestKeySetSpreadsPatternedKeys(t *testing.T) {
	const n = 40_000
	for name, key := range map[string]func(i uint64) uint64{
		"random":     splitmix,
		"sequential": func(i uint64) uint64 { return i + 1 },
		"stride-4K":  func(i uint64) uint64 { return (i + 1) << 12 },
		"high-half":  func(i uint64) uint64 { return (i + 1) << 32 },
		"top-bits":   func(i uint64) uint64 { return bits.Reverse64(i + 1) },
	} {
		for _, seed := range []uint64{0, rand.Uint64()} {
			s := newKeySet()
			s.seed = seed
			for i := range uint64(n) {
				s.insert(key(i))
			}
			mask := uint64(len(s.slots) - 1)
			probes := 0
			for j, k := range s.slots {
				if k != 0 {
					probes += int((uint64(j)-s.home(k))&mask) + 1
				}
			}
			load := float64(s.n) / float64(len(s.slots))
			mean := float64(probes) / float64(s.n)
			if random := (1 + 1/(1-load)) / 2; mean > 1.5*random {
				t.Errorf("%s keys, seed %#x: %.2f probes per hit at load %.2f; random keys take %.2f", name, seed, mean, load, random)
			}
		}
	}
}

// splitmix returns the n-th output of SplitMix64: distinct, random-looking
// keys from a counter, cheap enough not to weigh on a benchmark.
func splitmix(n uint64) uint64 {
	z := n*0x9e3779b97f4a7c15 + 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// BenchmarkDecisionCache measures the cache's work for a dropped trace on a
// busy node, with the cache full (500,000 dropped decisions, a shard's share
// of the default DecisionCacheSize on two cores) so that every add evicts:
// the lookup of a new trace's first span (a miss), the decision to drop it,
// and the lookup of a late span of a trace dropped 250,000 decisions before
// (a hit). "keyset" is the cache; "map" is mapDecisionCache, the Go map it
// replaced. MB/cache is the heap the full cache holds.
func BenchmarkDecisionCache(b *testing.B) {
	const size = 500_000
	type cache interface {
		addDropped(TraceID)
		lookup(TraceID) (*KeptDecision, bool)
	}
	for _, impl := range []struct {
		name string
		make func() cache
	}{
		{"map", func() cache { return newMapDecisionCache(size) }},
		{"keyset", func() cache { return newDecisionCache(size) }},
	} {
		b.Run(impl.name, func(b *testing.B) {
			id := func(n uint64) TraceID {
				var id TraceID
				binary.LittleEndian.PutUint64(id[8:], splitmix(n))
				return id
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			c := impl.make()
			n := uint64(0)
			for ; n < size; n++ {
				c.addDropped(id(n))
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			b.ReportAllocs()
			b.ResetTimer()
			misses := 0
			for range b.N {
				if _, dropped := c.lookup(id(n)); dropped {
					misses++
				}
				c.addDropped(id(n))
				if _, dropped := c.lookup(id(n - size/2)); !dropped {
					misses++
				}
				n++
			}
			b.StopTimer()
			if misses != 0 {
				b.Fatalf("%d lookups of %d answered wrong", misses, 2*b.N)
			}
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/1e6, "MB/cache")
			runtime.KeepAlive(c)
		})
	}
}
