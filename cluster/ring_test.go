package cluster

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tailsift/tailsift/sampler"
)

func nodeNames(n int) []string {
	ms := make([]string, n)
	for i := range ms {
		ms[i] = fmt.Sprintf("tailsift-%d", i)
	}
	return ms
}

// randomIDs returns n trace IDs from a fixed seed, so failures reproduce.
func randomIDs(n int) []sampler.TraceID {
	rng := rand.New(rand.NewPCG(1, 2))
	ids := make([]sampler.TraceID, n)
	for i := range ids {
		for j := 0; j < 16; j += 8 {
			v := rng.Uint64()
			for k := range 8 {
				ids[i][j+k] = byte(v >> (8 * k))
			}
		}
	}
	return ids
}

// TestRingSpread checks that traces spread evenly: no node owns much more
// than its share (the bounded-load cap, Load, plus key noise), none much
// less, and the relative standard deviation is small. Names are numbered
// as pods of a StatefulSet are ("tailsift-1", "tailsift-12"…), which once
// made members' virtual points collide and left some nodes almost empty.
func TestRingSpread(t *testing.T) {
	const keys = 1_000_000
	ids := randomIDs(keys)
	for _, nodes := range []int{8, 100} {
		t.Run(fmt.Sprint(nodes), func(t *testing.T) {
			r := NewRing("tailsift-0", nodeNames(nodes))
			load := map[string]int{}
			for i := range ids {
				n, _ := r.Owner(&ids[i])
				load[n]++
			}
			if len(load) != nodes {
				t.Fatalf("%d nodes own traces, want %d", len(load), nodes)
			}
			mean := float64(keys) / float64(nodes)
			mx, mn, ss := 0, keys, 0.0
			for _, l := range load {
				mx, mn = max(mx, l), min(mn, l)
				ss += (float64(l) - mean) * (float64(l) - mean)
			}
			cv := math.Sqrt(ss/float64(nodes)) / mean
			t.Logf("load max/mean %.3f, min/mean %.3f, stddev/mean %.3f", float64(mx)/mean, float64(mn)/mean, cv)
			if float64(mx)/mean > Load+0.05 {
				t.Errorf("max/mean load %.3f > %.2f", float64(mx)/mean, Load+0.05)
			}
			if float64(mn)/mean < 0.6 {
				t.Errorf("min/mean load %.3f < 0.6", float64(mn)/mean)
			}
			if cv > 0.12 {
				t.Errorf("stddev/mean load %.3f > 0.12", cv)
			}
		})
	}
}

// TestRingMovement checks that a join or a leave moves about 1/N of the
// traces. Bounded loads cascade a little (a node pushed over the cap sheds
// partitions to its neighbours), so the bound is 1.6× the ideal; a plain
// modulo would move (N-1)/N. bench/ringsim measures it at 100 nodes.
func TestRingMovement(t *testing.T) {
	const keys = 200_000
	ids := randomIDs(keys)
	for _, n := range []int{3, 8, 30} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			ms := nodeNames(n)
			before := NewRing(ms[0], ms)
			joined := NewRing(ms[0], append(slices.Clone(ms), "tailsift-new"))
			left := NewRing(ms[0], ms[1:])
			var onJoin, toNew, onLeave, unforced int
			for i := range ids {
				a, _ := before.Owner(&ids[i])
				b, _ := joined.Owner(&ids[i])
				c, _ := left.Owner(&ids[i])
				if a != b {
					onJoin++
					if b == "tailsift-new" {
						toNew++
					}
				}
				if a != c {
					onLeave++
					if a != ms[0] {
						unforced++ // moved though its owner stayed
					}
				}
			}
			joinShare := float64(onJoin) / keys
			leaveShare := float64(onLeave) / keys
			t.Logf("join moved %.4f (ideal %.4f, %.0f%% to the new node); leave moved %.4f (ideal %.4f, %d not from the leaver)",
				joinShare, 1/float64(n+1), 100*float64(toNew)/float64(onJoin), leaveShare, 1/float64(n), unforced)
			if joinShare > 1.6/float64(n+1) || joinShare < 0.5/float64(n+1) {
				t.Errorf("join moved %.4f of traces, want about %.4f", joinShare, 1/float64(n+1))
			}
			if leaveShare > 1.6/float64(n) || leaveShare < 0.5/float64(n) {
				t.Errorf("leave moved %.4f of traces, want about %.4f", leaveShare, 1/float64(n))
			}
		})
	}
}

// TestRingAgreement checks that nodes agree on owners whatever order they
// learned members in, and that local is true exactly for self.
func TestRingAgreement(t *testing.T) {
	ms := nodeNames(5)
	rev := slices.Clone(ms)
	slices.Reverse(rev)
	a := NewRing(ms[0], ms)
	b := NewRing(ms[3], append(rev, ms[2], "")) // duplicates and "" ignored
	if !slices.Equal(a.Members(), b.Members()) {
		t.Fatalf("members differ: %v vs %v", a.Members(), b.Members())
	}
	for _, id := range randomIDs(10_000) {
		na, la := a.Owner(&id)
		nb, lb := b.Owner(&id)
		if na != nb || la != (na == ms[0]) || lb != (nb == ms[3]) {
			t.Fatalf("trace %x: a says %s/%v, b says %s/%v", id, na, la, nb, lb)
		}
	}
	if !a.Has(ms[4]) || a.Has("nobody") {
		t.Fatal("Has is wrong")
	}
}

func TestRingEmptyIsLocal(t *testing.T) {
	r := NewRing("me", nil)
	id := sampler.TraceID{1}
	if n, local := r.Owner(&id); n != "me" || !local {
		t.Fatalf("empty ring: Owner = %s, %v", n, local)
	}
	// A node not (yet) in the ring owns nothing.
	r = NewRing("me", []string{"a", "b"})
	for _, id := range randomIDs(1000) {
		if _, local := r.Owner(&id); local {
			t.Fatal("non-member owns a trace")
		}
	}
}

// TestRingShare checks each member's reported share against the fraction
// of random trace IDs it owns, and that the shares add up to the whole.
func TestRingShare(t *testing.T) {
	ms := nodeNames(5)
	ids := randomIDs(200_000)
	var sum float64
	for _, self := range ms {
		r := NewRing(self, ms)
		owned := 0
		for _, id := range ids {
			if _, local := r.Owner(&id); local {
				owned++
			}
		}
		got, measured := r.Share(), float64(owned)/float64(len(ids))
		if math.Abs(got-measured) > 0.01 {
			t.Errorf("%s: Share %.4f, owns %.4f of random IDs", self, got, measured)
		}
		sum += got
	}
	if math.Abs(sum-1) > 1e-9 {
		t.Errorf("shares add up to %v, want 1", sum)
	}
	if s := NewRing("me", nil).Share(); s != 1 {
		t.Errorf("empty ring: Share %v, want 1", s)
	}
	if s := NewRing("me", ms).Share(); s != 0 {
		t.Errorf("non-member: Share %v, want 0", s)
	}
}

var benchSink int

func BenchmarkRingOwner(b *testing.B) {
	for _, n := range []int{3, 100} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			ms := nodeNames(n)
			r := NewRing(ms[0], ms)
			ids := randomIDs(4096)
			b.ReportAllocs()
			b.ResetTimer()
			sum := 0
			for i := 0; b.Loop(); i++ {
				node, _ := r.Owner(&ids[i&4095])
				sum += len(node)
			}
			benchSink += sum
		})
	}
}

func BenchmarkNewRing(b *testing.B) {
	for _, n := range []int{3, 100} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			ms := nodeNames(n)
			b.ReportAllocs()
			for b.Loop() {
				benchSink += len(NewRing(ms[0], ms).owners)
			}
		})
	}
}
