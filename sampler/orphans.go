package sampler

import (
	"encoding/binary"
	"slices"

	"github.com/tailsift/tailsift/internal/otlpwire"
)

// idScratch holds the span and parent IDs of the trace being decided; a
// shard reuses one, so counting orphans allocates nothing once it has grown
// to the largest trace.
type idScratch struct{ own, parents []uint64 }

// orphanSpans counts the spans of a kept trace whose parent span is not
// among them: the parent was never sent, was lost upstream, or arrived too
// late for the decision. It is the coverage signal next to traces decided
// without a root.
//
// It walks each span's fields once (attributes are skipped, not decoded),
// then sorts the trace's 8-byte span IDs and looks each parent up: about
// 50 ns a span (BenchmarkOrphanSpans), small next to buffering it.
func orphanSpans(spans []Span, sc *idScratch) int {
	if len(spans) == 1 {
		if spans[0].Root() {
			return 0
		}
		return 1
	}
	own, parents := sc.own[:0], sc.parents[:0]
	var si otlpwire.SpanInfo
	for i := range spans {
		if otlpwire.ScanSpan(spans[i].Raw, &si) != nil {
			continue
		}
		if len(si.SpanID) == 8 {
			own = append(own, binary.LittleEndian.Uint64(si.SpanID))
		}
		if !spans[i].Root() && len(si.ParentID) == 8 {
			parents = append(parents, binary.LittleEndian.Uint64(si.ParentID))
		}
	}
	slices.Sort(own)
	n := 0
	for _, p := range parents {
		if _, found := slices.BinarySearch(own, p); !found {
			n++
		}
	}
	sc.own, sc.parents = own, parents
	return n
}
