// Command ringsim measures the cluster's consistent-hash ring on a large
// cluster going through joins and leaves: for each membership change, the
// share of trace IDs whose owner moved (ideally 1/N: only the traces of
// the node that joined or left) and how evenly traces spread over nodes.
//
// It builds rings with cluster.NewRingParams, the code every node runs, so
// the numbers are those of the real ring. With -sweep it repeats the same
// sequence of changes for other partition counts, replication factors,
// load caps and hashers, one parameter at a time, to show why the
// defaults are what they are.
//
//	go run ./bench/ringsim                # the default ring, change by change
//	go run ./bench/ringsim -sweep         # plus the parameter comparison
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"hash/crc64"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"time"

	"github.com/buraksezer/consistent"
	"github.com/tailsift/tailsift/cluster"
	"github.com/tailsift/tailsift/sampler"
)

func main() {
	nodes := flag.Int("nodes", 100, "nodes in the ring at the start")
	ids := flag.Int("ids", 1_000_000, "random trace IDs to place")
	changes := flag.Int("changes", 20, "joins and leaves to go through")
	seed := flag.Uint64("seed", 1, "seed of the trace IDs and of the change sequence")
	sweep := flag.Bool("sweep", false, "also compare other ring parameters on the same changes")
	flag.Parse()
	switch {
	case *nodes < 2 || *nodes > 1000:
		fail("-nodes must be within [2, 1000], got %d", *nodes)
	case *ids < 1000 || *ids > 20_000_000:
		fail("-ids must be within [1000, 20000000], got %d", *ids)
	case *changes < 1 || *changes > 200:
		fail("-changes must be within [1, 200], got %d", *changes)
	}

	traceIDs := randomIDs(*ids, *seed)
	seq := changeSequence(*nodes, *changes, *seed)
	def := cluster.DefaultRingParams()
	fmt.Printf("ring: %d nodes, %d trace IDs, %d changes; partitions %d, replication factor %d, load %.2f, hasher xxhash\n\n",
		*nodes, *ids, *changes, def.PartitionCount, def.ReplicationFactor, def.Load)
	res := simulate(def, seq, traceIDs)
	printChanges(os.Stdout, seq, res)
	fmt.Println()
	printSummaryHeader(os.Stdout)
	printSummary(os.Stdout, "default", res)

	if !*sweep {
		return
	}
	fmt.Println()
	printSummaryHeader(os.Stdout)
	for _, v := range variants(def) {
		printSummary(os.Stdout, v.name, simulate(v.params, seq, traceIDs))
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ringsim: "+format+"\n", args...)
	os.Exit(2)
}

// randomIDs returns n trace IDs, random as W3C trace IDs are.
func randomIDs(n int, seed uint64) []sampler.TraceID {
	rng := rand.New(rand.NewPCG(seed, 0x1d5))
	out := make([]sampler.TraceID, n)
	for i := range out {
		binary.LittleEndian.PutUint64(out[i][:8], rng.Uint64())
		binary.LittleEndian.PutUint64(out[i][8:], rng.Uint64())
	}
	return out
}

// step is one membership change and the members after it.
type step struct {
	join    bool
	node    string
	members []string
}

// changeSequence starts with n nodes and joins or leaves one node at a
// time, at random but keeping the size within n±10%, so every change is
// measured on a ring of about n nodes. Names look like pod names.
func changeSequence(n, changes int, seed uint64) []step {
	rng := rand.New(rand.NewPCG(seed, 0x5e9))
	name := func(i int) string { return fmt.Sprintf("tailsift-%d", i) }
	members := make([]string, n)
	for i := range members {
		members[i] = name(i)
	}
	next := n
	seq := []step{{members: slices.Clone(members)}}
	lo, hi := n-max(1, n/10), n+max(1, n/10)
	for range changes {
		join := rng.IntN(2) == 0
		if len(members) <= lo {
			join = true
		} else if len(members) >= hi {
			join = false
		}
		var s step
		if join {
			s = step{join: true, node: name(next)}
			next++
			members = append(members, s.node)
		} else {
			i := rng.IntN(len(members))
			s = step{node: members[i]}
			members = slices.Delete(members, i, i+1)
		}
		s.members = slices.Clone(members)
		seq = append(seq, s)
	}
	return seq
}

// result measures one change (the first of a run measures only spread).
type result struct {
	moved      float64 // share of IDs whose owner changed
	ideal      float64 // 1/N, N the larger of the sizes before and after
	collateral float64 // share of IDs moved between two nodes that both stayed
	spread             // after the change
	build      time.Duration
}

type spread struct{ maxMean, minMean, cv float64 }

// simulate builds the ring after every step and compares owners.
func simulate(p cluster.RingParams, seq []step, ids []sampler.TraceID) []result {
	prev := make([]string, len(ids))
	cur := make([]string, len(ids))
	out := make([]result, len(seq))
	for si, s := range seq {
		start := time.Now()
		r := cluster.NewRingParams(s.members[0], s.members, p)
		build := time.Since(start)
		load := make(map[string]int, len(s.members))
		moved, collateral := 0, 0
		for i := range ids {
			o, _ := r.Owner(&ids[i])
			cur[i] = o
			load[o]++
			if si > 0 && o != prev[i] {
				moved++
				if o != s.node && prev[i] != s.node {
					collateral++
				}
			}
		}
		res := result{spread: loadSpread(load, len(s.members), len(ids)), build: build}
		if si > 0 {
			n := max(len(seq[si-1].members), len(s.members))
			res.moved = float64(moved) / float64(len(ids))
			res.ideal = 1 / float64(n)
			res.collateral = float64(collateral) / float64(len(ids))
		}
		out[si] = res
		prev, cur = cur, prev
	}
	return out
}

// loadSpread compares each node's share of IDs to the mean; nodes owning
// nothing count as zero.
func loadSpread(load map[string]int, nodes, ids int) spread {
	mean := float64(ids) / float64(nodes)
	mx, mn := 0, ids
	if len(load) < nodes {
		mn = 0
	}
	var ss float64
	for _, l := range load {
		mx, mn = max(mx, l), min(mn, l)
		ss += (float64(l) - mean) * (float64(l) - mean)
	}
	ss += float64(nodes-len(load)) * mean * mean
	return spread{maxMean: float64(mx) / mean, minMean: float64(mn) / mean, cv: math.Sqrt(ss/float64(nodes)) / mean}
}

func printChanges(w io.Writer, seq []step, res []result) {
	fmt.Fprintf(w, "%-6s %-16s %5s %8s %8s %7s %10s %8s %8s %8s\n",
		"change", "node", "nodes", "moved", "ideal", "ratio", "collateral", "max/mean", "min/mean", "stddev")
	for i, s := range seq {
		r := res[i]
		if i == 0 {
			fmt.Fprintf(w, "%-6s %-16s %5d %8s %8s %7s %10s %8.3f %8.3f %7.2f%%\n",
				"start", "", len(s.members), "", "", "", "", r.maxMean, r.minMean, 100*r.cv)
			continue
		}
		kind := "leave"
		if s.join {
			kind = "join"
		}
		fmt.Fprintf(w, "%-6s %-16s %5d %7.3f%% %7.3f%% %7.2f %9.3f%% %8.3f %8.3f %7.2f%%\n",
			kind, s.node, len(s.members), 100*r.moved, 100*r.ideal, r.moved/r.ideal, 100*r.collateral,
			r.maxMean, r.minMean, 100*r.cv)
	}
}

func printSummaryHeader(w io.Writer) {
	fmt.Fprintf(w, "%-22s %10s %10s %12s %12s %12s %10s %10s\n",
		"params", "moved/1/N", "worst", "collateral", "max/mean", "min/mean", "stddev", "build")
}

// printSummary averages over the changes: movement relative to 1/N (mean
// and worst), collateral movement as a share of all IDs, the worst
// max/mean and min/mean seen after any change, the mean relative standard
// deviation, and the mean time to build the ring.
func printSummary(w io.Writer, name string, res []result) {
	var ratio, worst, coll, cv float64
	var build time.Duration
	mx, mn := 0.0, math.Inf(1)
	for i, r := range res {
		mx, mn = max(mx, r.maxMean), min(mn, r.minMean)
		cv += r.cv
		build += r.build
		if i == 0 {
			continue
		}
		ratio += r.moved / r.ideal
		worst = max(worst, r.moved/r.ideal)
		coll += r.collateral
	}
	n := float64(len(res) - 1)
	fmt.Fprintf(w, "%-22s %10.2f %10.2f %11.3f%% %12.3f %12.3f %9.2f%% %10s\n",
		name, ratio/n, worst, 100*coll/n, mx, mn, 100*cv/float64(len(res)),
		(build / time.Duration(len(res))).Round(time.Microsecond))
}

type variant struct {
	name   string
	params cluster.RingParams
}

// variants changes one default parameter at a time.
func variants(def cluster.RingParams) []variant {
	var vs []variant
	with := func(name string, edit func(*cluster.RingParams)) {
		p := def
		edit(&p)
		vs = append(vs, variant{name, p})
	}
	for _, pc := range []int{271, 1021, 2039, 4093, 7919, 16381, 32749} {
		with(fmt.Sprintf("partitions=%d", pc), func(p *cluster.RingParams) { p.PartitionCount = pc })
	}
	for _, rf := range []int{10, 20, 40, 80, 160} {
		with(fmt.Sprintf("replication=%d", rf), func(p *cluster.RingParams) { p.ReplicationFactor = rf })
	}
	for _, l := range []float64{1.05, 1.1, 1.25, 1.5, 2, 10} {
		with(fmt.Sprintf("load=%.2f", l), func(p *cluster.RingParams) { p.Load = l })
	}
	for _, rf := range []int{40, 80, 160} {
		for _, l := range []float64{1.1, 1.15} {
			for _, pc := range []int{7919, 16381} {
				with(fmt.Sprintf("p=%d,r=%d,l=%.2f", pc, rf, l), func(p *cluster.RingParams) {
					p.PartitionCount, p.ReplicationFactor, p.Load = pc, rf, l
				})
			}
		}
	}
	with("hasher=fnv1a", func(p *cluster.RingParams) { p.Hasher = fnv1a{} })
	with("hasher=crc64", func(p *cluster.RingParams) { p.Hasher = crc{} })
	return vs
}

// fnv1a and crc are alternative circle hashers from the standard library.
type fnv1a struct{}

func (fnv1a) Sum64(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}

var crcTable = crc64.MakeTable(crc64.ECMA)

type crc struct{}

func (crc) Sum64(b []byte) uint64 { return crc64.Checksum(b, crcTable) }

var (
	_ consistent.Hasher = fnv1a{}
	_ consistent.Hasher = crc{}
)
