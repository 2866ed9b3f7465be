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
const (
	// PartitionCount is the number of slots trace IDs hash into; whole
	// partitions move between nodes. 7919 (prime, so the modulo mixes every
	// hash bit) keeps about 79 partitions per node at 100 nodes, fine enough
	// for the bounded-load cap to mean something (with 1021 a node at 100
	// nodes would hold ~10, and one partition more or less is ±10% load).
	// The owner table it implies is 7919×2 bytes, which stays in L1/L2.
	PartitionCount = 7919
	// ReplicationFactor is the number of virtual points per member on the
	// hash circle. More points mean a smoother first-fit assignment and less
	// movement on join/leave; 40 keeps building a 100-node ring (4000
	// points, 7919 searches) well under a millisecond.
	ReplicationFactor = 40
	// Load caps any member at 1.25× the average partition count
	// (consistent hashing with bounded loads).
	Load = 1.25

	// ringSeed seeds the trace ID → partition hash. The sampler picks
	// shards with unseeded xxhash; a different seed keeps node choice and
	// shard choice independent, so one node's traces still spread over all
	// its shards.
	ringSeed = 0x7a11_5f17_0c1a_55e7
)

var _ router.Ring = (*Ring)(nil)

// Ring maps trace IDs to the member that owns them. It is immutable: a
// membership change builds a new Ring (router.Route.SetRing swaps it).
//
// Owner costs one xxhash of 16 bytes, a modulo and a table load: the
// partition → owner table is computed once by buraksezer/consistent in
// NewRing, so lookups take none of consistent's locks and allocate nothing.
type Ring struct {
	self    string
	selfIdx int      // index of self in members, or -1
	members []string // sorted, unique
	owners  []uint16 // partition → index into members
}

// member adapts a node name to consistent.Member.
type member string

func (m member) String() string { return string(m) }

// hasher is xxhash, used by consistent to place members and partitions on
// its circle.
type hasher struct{}

func (hasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

// maxMembers bounds the ring so owner indexes fit in uint16 and every
// member can hold at least one partition under the load cap.
const maxMembers = PartitionCount / 2

// NewRing builds the ring of members as seen by node self. Duplicate and
// empty names are ignored. With no members, every trace is owned by self:
// a node alone (or before it has joined) processes everything locally.
// self need not be a member: a node not yet routable sends every trace on.
//
// Members are sorted before they are added, so every node builds the same
// table from the same set whatever order gossip reported it in (consistent
// resolves colliding virtual points by insertion order).
func NewRing(self string, members []string) *Ring {
	ms := make([]string, 0, len(members))
	for _, m := range members {
		if m != "" {
			ms = append(ms, m)
		}
	}
	slices.Sort(ms)
	ms = slices.Compact(ms)
	if len(ms) > maxMembers {
		panic(fmt.Sprintf("cluster: %d ring members, at most %d supported", len(ms), maxMembers))
	}
	r := &Ring{self: self, selfIdx: -1, members: ms}
	if i, ok := slices.BinarySearch(ms, self); ok {
		r.selfIdx = i
	}
	if len(ms) == 0 {
		return r
	}
	cm := make([]consistent.Member, len(ms))
	for i, m := range ms {
		cm[i] = member(m)
	}
	c := consistent.New(cm, consistent.Config{
		Hasher:            hasher{},
		PartitionCount:    PartitionCount,
		ReplicationFactor: ReplicationFactor,
		Load:              Load,
	})
	r.owners = make([]uint16, PartitionCount)
	for p := range r.owners {
		i, ok := slices.BinarySearch(ms, c.GetPartitionOwner(p).String())
		if !ok {
			panic("BUG: consistent assigned a partition to a non-member")
		}
		r.owners[p] = uint16(i)
	}
	return r
}

// partition is the partition of a trace ID.
func partition(id *sampler.TraceID) int {
	var d xxhash.Digest
	d.ResetWithSeed(ringSeed)
	d.Write(id[:])
	return int(d.Sum64() % PartitionCount)
}

// Owner returns the member owning id, and whether that is this node. On an
// empty ring it returns this node.
func (r *Ring) Owner(id *sampler.TraceID) (node string, local bool) {
	if len(r.members) == 0 {
		return r.self, true
	}
	i := int(r.owners[partition(id)])
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
