package sampler

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func TestOrphanSpans(t *testing.T) {
	// span returns a span with ID id and parent parent (0: a root).
	span := func(id, parent byte) Span {
		var b []byte
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, make([]byte, 16))
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, []byte{0, 0, 0, 0, 0, 0, 1, id})
		s := Span{Flags: FlagRoot}
		if parent != 0 {
			b = protowire.AppendTag(b, 4, protowire.BytesType)
			b = protowire.AppendBytes(b, []byte{0, 0, 0, 0, 0, 0, 1, parent})
			s.Flags = 0
		}
		b = appendKVs(b, 9, []kv{{"http.route", "/x"}})
		s.Raw = b
		return s
	}
	tests := []struct {
		name  string
		spans []Span
		want  int
	}{
		{"lone root", []Span{span(1, 0)}, 0},
		{"lone child", []Span{span(2, 1)}, 1},
		{"whole tree, children first", []Span{span(3, 2), span(2, 1), span(4, 1), span(1, 0)}, 0},
		{"root missing", []Span{span(2, 1), span(3, 1), span(4, 2)}, 2},
		{"middle span missing", []Span{span(1, 0), span(3, 2), span(4, 3), span(5, 2)}, 2},
		{"parent is another trace's span ID", []Span{span(1, 0), span(2, 9)}, 1},
	}
	var sc idScratch
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := orphanSpans(tc.spans, &sc); got != tc.want {
				t.Fatalf("orphanSpans = %d, want %d", got, tc.want)
			}
		})
	}
}

func BenchmarkOrphanSpans(b *testing.B) {
	spans := build(TraceID{1}, sp{name: "root", dur: 10}, sp{name: "a", child: true, attrs: []kv{{"http.route", "/a"}, {"k", 1}}},
		sp{name: "b", child: true}, sp{name: "c", child: true}, sp{name: "d", child: true}, sp{name: "e", child: true},
		sp{name: "f", child: true}, sp{name: "g", child: true}).Spans
	var sc idScratch
	b.ReportAllocs()
	for b.Loop() {
		orphanSpans(spans, &sc)
	}
}
