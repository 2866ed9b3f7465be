package cluster

import (
	"fmt"
	"slices"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
	"github.com/tailsift/tailsift/router"
	"github.com/tailsift/tailsift/sampler"
)

// Ring parameters. Every node must use the same values, or nodes disagree
// on owners and split traces: they are constants, not configuration.
// bench/ringsim measures them (and alternatives) on a 100-node ring going
// through joins and leaves.
const (
	// PartitionCount is the number of slots trace IDs hash into; whole
	// partitions move between nodes. 16381 (prime, so the modulo mixes
	// every hash bit) gives about 164 partitions per node at 100 nodes, so
	// one partition more or less is under 1% of a node's load and the
	// bounded-load cap can be tight. The owner table is 16381×2 bytes.
	PartitionCount = 16381
	// ReplicationFactor is the number of virtual points per member on the
	// hash circle. A member's share of the circle varies by about
	// 1/sqrt(ReplicationFactor), so more points lift the least-loaded
	// nodes and cut the partitions a change moves. The price is build
	// time: consistent re-sorts every point as it adds each member, about
	// 0.1-0.25 s for 100 members on one core, once per membership change.
	ReplicationFactor = 160
	// Load caps any member at 1.1× the average partition count
	// (consistent hashing with bounded loads), so the busiest node needs
	// little headroom. A tighter cap makes a change push more partitions on
	// to neighbours: measured at 100 nodes, 1.05 moved 2× the ideal 1/N.
	//
	// Measured by bench/ringsim (100 nodes, 20 joins and leaves, 10^6
	// trace IDs): a change moves 1.2× the ideal 1/N on average; the
	// busiest node holds 1.16× the mean, the least loaded 0.7×, standard
	// deviation 8%. The earlier 7919/40/1.25 moved 1.19× but spread
	// 1.28×/0.58×/17%.
	Load = 1.10

	// ringSeed seeds the trace ID → partition hash. The sampler picks
	// shards with unseeded xxhash; a different seed keeps node choice and
	// shard choice independent, so one node's traces still spread over all
	// its shards.
	ringSeed = 0x7a11_5f17_0c1a_55e7
)

// RingParams are the parameters a ring is built with. Nodes only ever use
// DefaultRingParams (through NewRing); other values exist so that
// bench/ringsim can compare them on the same code path.
type RingParams struct {
	PartitionCount    int     // slots trace IDs hash into; 2..65535
	ReplicationFactor int     // virtual points per member on the circle
	Load              float64 // bounded-load cap, a multiple of the mean partition count; > 1
	// Hasher places members and partitions on the circle. Nil: xxhash.
	Hasher consistent.Hasher
}

// DefaultRingParams returns the parameters every node uses.
func DefaultRingParams() RingParams {
	return RingParams{PartitionCount: PartitionCount, ReplicationFactor: ReplicationFactor, Load: Load, Hasher: XXHash{}}
}

var _ router.Ring = (*Ring)(nil)

// Ring maps trace IDs to the member that owns them. It is immutable: a
// membership change builds a new Ring (router.Route.SetRing swaps it).
//
// Owner costs one xxhash of 16 bytes, a modulo and a table load: the
// partition → owner table is computed once by buraksezer/consistent in
// NewRing, so lookups take none of consistent's locks and allocate nothing.
type Ring struct {
	parts   uint64 // partition count
	self    string
	selfIdx int      // index of self in members, or -1
	members []string // sorted, unique
	owners  []uint16 // partition → index into members
}

// member adapts a node name to consistent.Member. consistent places
// virtual point i of a member at hash(String() + decimal i); with the bare
// name, numbered names collide ("node-1" point 23 and "node-12" point 3 are
// both "node-123"), the later member takes the point, and "node-1" is left
// with a sliver of the circle. Ending the key with a byte that is not a
// digit makes every (name, i) key distinct.
type member struct{ name, key string }

func newMember(name string) member { return member{name: name, key: name + "#"} }

func (m member) String() string { return m.key }

// XXHash is the consistent.Hasher of DefaultRingParams: xxhash64, fast
// and well mixed even for the near-identical member names ("node-1",
// "node-2"…) and sequential partition numbers consistent hashes.
type XXHash struct{}

// Sum64 implements consistent.Hasher.
func (XXHash) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

// NewRing builds the ring of members as seen by node self. Duplicate and
// empty names are ignored. With no members, every trace is owned by self:
// a node alone (or before it has joined) processes everything locally.
// self need not be a member: a node not yet routable sends every trace on.
//
// Members are sorted before they are added, so every node builds the same
// table from the same set whatever order gossip reported it in (consistent
// resolves colliding virtual points by insertion order).
func NewRing(self string, members []string) *Ring {
	return NewRingParams(self, members, DefaultRingParams())
}

// NewRingParams is NewRing with other parameters. It panics on parameters
// out of range (they are constants in any real use).
func NewRingParams(self string, members []string, p RingParams) *Ring {
	if p.PartitionCount < 2 || p.PartitionCount > 1<<16-1 || p.ReplicationFactor < 1 || p.Load <= 1 {
		panic(fmt.Sprintf("cluster: ring parameters out of range: %+v", p))
	}
	if p.Hasher == nil {
		p.Hasher = XXHash{}
	}
	ms := make([]string, 0, len(members))
	for _, m := range members {
		if m != "" {
			ms = append(ms, m)
		}
	}
	slices.Sort(ms)
	ms = slices.Compact(ms)
	// At most half as many members as partitions, so owner indexes fit in
	// uint16 and every member can hold a partition under the load cap.
	if len(ms) > p.PartitionCount/2 {
		panic(fmt.Sprintf("cluster: %d ring members, at most %d supported", len(ms), p.PartitionCount/2))
	}
	r := &Ring{parts: uint64(p.PartitionCount), self: self, selfIdx: -1, members: ms}
	if i, ok := slices.BinarySearch(ms, self); ok {
		r.selfIdx = i
	}
	if len(ms) == 0 {
		return r
	}
	cm := make([]consistent.Member, len(ms))
	for i, m := range ms {
		cm[i] = newMember(m)
	}
	c := consistent.New(cm, consistent.Config{
		Hasher:            p.Hasher,
		PartitionCount:    p.PartitionCount,
		ReplicationFactor: p.ReplicationFactor,
		Load:              p.Load,
	})
	r.owners = make([]uint16, p.PartitionCount)
	for p := range r.owners {
		m, _ := c.GetPartitionOwner(p).(member)
		i, ok := slices.BinarySearch(ms, m.name)
		if !ok {
			panic("BUG: consistent assigned a partition to a non-member")
		}
		r.owners[p] = uint16(i)
	}
	return r
}

// partition is the partition of a trace ID.
func (r *Ring) partition(id *sampler.TraceID) int {
	var d xxhash.Digest
	d.ResetWithSeed(ringSeed)
	d.Write(id[:])
	return int(d.Sum64() % r.parts)
}

// Owner returns the member owning id, and whether that is this node. On an
// empty ring it returns this node.
func (r *Ring) Owner(id *sampler.TraceID) (node string, local bool) {
	if len(r.members) == 0 {
		return r.self, true
	}
	i := int(r.owners[r.partition(id)])
	return r.members[i], i == r.selfIdx
}

// Has reports whether node is a member.
func (r *Ring) Has(node string) bool {
	_, ok := slices.BinarySearch(r.members, node)
	return ok
}

// Members returns the members, sorted. The caller may modify the slice.
func (r *Ring) Members() []string { return slices.Clone(r.members) }

// Share is the fraction of trace IDs this node owns: 1 on an empty ring, 0
// when this node is not a member. With the bounded-load cap no member holds
// more than Load times the average.
func (r *Ring) Share() float64 {
	if len(r.members) == 0 {
		return 1
	}
	if r.selfIdx < 0 {
		return 0
	}
	n := 0
	for _, o := range r.owners {
		if int(o) == r.selfIdx {
			n++
		}
	}
	return float64(n) / PartitionCount
}

// Self is the node the ring was built for.
func (r *Ring) Self() string { return r.self }
