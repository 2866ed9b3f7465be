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
	dropped  map[TraceID]struct{}
	dropFIFO []TraceID
	dropHead int
}

func newMapDecisionCache(size int) *mapDecisionCache {
	return &mapDecisionCache{decisionCache: newDecisionCache(size), dropped: make(map[TraceID]struct{})}
}

func (c *mapDecisionCache) addDropped(id TraceID) {
	if _, ok := c.dropped[id]; ok {
		return
	}
	c.dropped[id] = struct{}{}
	c.dropHead = push(&c.dropFIFO, c.dropHead, c.dropMax, id, func(old TraceID) { delete(c.dropped, old) })
}

func (c *mapDecisionCache) lookup(id TraceID) (kept *KeptDecision, dropped bool) {
	if d, ok := c.kept[id]; ok {
		return d, false
	}
	_, dropped = c.dropped[id]
	return nil, dropped
}

func (c *mapDecisionCache) len() int { return len(c.dropped) + len(c.kept) }

// idOf returns the trace ID whose first 8 bytes are hi and last 8 are lo,
// little endian.
func idOf(hi, lo uint64) TraceID {
	var id TraceID
	binary.LittleEndian.PutUint64(id[:8], hi)
	binary.LittleEndian.PutUint64(id[8:], lo)
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
		if k == (idKey{}) {
			continue
		}
		n++
		for i := s.home(k); i != uint64(j); i = (i + 1) & mask {
			if s.slots[i] == (idKey{}) {
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
// every add evicts and the table's probe runs are long, and IDs drawn from
// small pools so that re-adds, hits and evicted IDs all come up often. The
// pools include sequential IDs, the zero ID, IDs that use one half only and
// IDs that share one half.
func TestDecisionCacheMatchesMaps(t *testing.T) {
	pools := map[string]func(n uint64) TraceID{
		"random":     func(n uint64) TraceID { return idOf(splitmix(n), splitmix(n+1<<40)) },
		"sequential": func(n uint64) TraceID { return idOf(0, n) },
		"high-half":  func(n uint64) TraceID { return idOf(n, 0) },
		"same-low":   func(n uint64) TraceID { return idOf(splitmix(n), 0x5eed) },
		"same-high":  func(n uint64) TraceID { return idOf(0x5eed, splitmix(n)) },
		"top-byte":   func(n uint64) TraceID { return idOf(1, n<<56|1) },
		"mixed": func(n uint64) TraceID {
			switch n % 3 {
			case 0:
				return idOf(0, n/3)
			case 1:
				return idOf((n/3)<<40, 7)
			}
			return idOf(n, splitmix(n))
		},
	}
	for name, idFor := range pools {
		for _, size := range []int{16, 37, 200} {
			t.Run(fmt.Sprintf("%s/%d", name, size), func(t *testing.T) {
				r := rand.New(rand.NewPCG(uint64(size), 7))
				c, ref := newDecisionCache(size), newMapDecisionCache(size)
				c.dropped.seed = r.Uint64()
				pool := uint64(3 * size)
				for op := range 20_000 {
					id := idFor(r.Uint64N(pool))
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
						t.Fatalf("op %d: lookup(%x) = %p, %v; the maps say %p, %v", op, id, gotK, gotD, wantK, wantD)
					}
					if c.len() != ref.len() {
						t.Fatalf("op %d: holds %d decisions, the maps %d", op, c.len(), ref.len())
					}
					if op%97 == 0 {
						checkKeySet(t, &c.dropped, size+1)
						for n := range pool {
							id := idFor(n)
							if got, want := c.dropped.has(cacheKey(id)), hasKey(ref.dropped, id); got != want {
								t.Fatalf("op %d: has(%x) = %v, the map says %v", op, id, got, want)
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

// TestDecisionCacheTellsApartIDsSharingAHalf checks that a decision is for
// its own trace only: IDs equal in either 8-byte half to a dropped or a
// kept trace's are neither.
func TestDecisionCacheTellsApartIDsSharingAHalf(t *testing.T) {
	c := newDecisionCache(100)
	dropped, kept := idOf(1, 2), idOf(3, 4)
	c.addDropped(dropped)
	d := &KeptDecision{ID: kept}
	c.addKept(kept, d)
	for _, id := range []TraceID{idOf(1, 5), idOf(5, 2), idOf(3, 5), idOf(5, 4), idOf(2, 1), idOf(4, 3)} {
		if k, drop := c.lookup(id); k != nil || drop {
			t.Errorf("lookup(%x) = %v, %v: another trace's decision", id, k, drop)
		}
	}
	if k, drop := c.lookup(dropped); k != nil || !drop {
		t.Errorf("the dropped trace: %v, %v", k, drop)
	}
	if k, drop := c.lookup(kept); k != d || drop {
		t.Errorf("the kept trace: %v, %v", k, drop)
	}
}

func hasKey(m map[TraceID]struct{}, id TraceID) bool { _, ok := m[id]; return ok }

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
		id := idOf(r.Uint64(), splitmix(uint64(n)))
		c.addDropped(id)
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
		id := idOf(r.Uint64(), splitmix(uint64(n)))
		_, dropped := c.lookup(id)
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
	for name, key := range map[string]func(i uint64) idKey{
		"random":      func(i uint64) idKey { return idKey{lo: splitmix(i), hi: splitmix(i + 1<<40)} },
		"sequential":  func(i uint64) idKey { return idKey{lo: i + 1} },
		"stride-4K":   func(i uint64) idKey { return idKey{lo: (i + 1) << 12} },
		"high-half":   func(i uint64) idKey { return idKey{hi: i + 1} },
		"same-low":    func(i uint64) idKey { return idKey{lo: 0x5eed, hi: i + 1} },
		"top-bits":    func(i uint64) idKey { return idKey{lo: bits.Reverse64(i + 1)} },
		"top-bits-hi": func(i uint64) idKey { return idKey{hi: bits.Reverse64(i + 1)} },
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
				if k != (idKey{}) {
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
