package router

import (
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestWalls feeds one partition's scan outcomes ('g' scanned, 'j' bad and
// JSON-looking, 'p' bad and protobuf-looking, 'x' bad and neither) and
// checks when it stops, why, and where commits are held.
func TestWalls(t *testing.T) {
	values := map[byte][]byte{'g': {0x0a, 1, 0}, 'j': []byte(` {"resourceSpans":[]}`), 'p': {0x0a, 0x7b, 0x0a}, 'x': {0xff}}
	repeat := func(c byte, n int) string { return strings.Repeat(string(c), n) }
	f := func(name, encoding, outcomes, wantStop string, wantHold int64) {
		t.Helper()
		w := newWalls(encoding)
		var stop string
		for i := range len(outcomes) {
			c := outcomes[i]
			if s := w.note(3, int64(i), values[c], c != 'g'); s != "" && stop == "" {
				stop = s
			}
		}
		if stop != wantStop || (w.stopped()[wantStop] == nil) != (wantStop == "") {
			t.Errorf("%s: stopped %q, want %q", name, stop, wantStop)
		}
		offsets := map[int32]kgo.EpochOffset{3: {Offset: int64(len(outcomes))}}
		w.hold(offsets, func(int32) int64 { return -1 })
		if got := offsets[3].Offset; got != wantHold {
			t.Errorf("%s: commit held at %d, want %d", name, got, wantHold)
		}
	}
	f("all good", EncodingProto, repeat('g', 300), "", 300)
	f("isolated bad records", EncodingProto, repeat('g', 50)+"x"+repeat('g', 30)+"j"+repeat('g', 200), "", 282)
	f("recent bad record holds", EncodingProto, repeat('g', 50)+"x"+repeat('g', 30), "", 50)
	f("json read as proto, from the start", EncodingProto, repeat('j', 10), stopLooksJSON, 0)
	f("nine bad first records are not a wall", EncodingProto, repeat('j', 9)+repeat('g', 200), "", 209)
	f("proto read as json, after good ones", EncodingJSON, repeat('g', 500)+repeat('p', 80), stopLooksProto, 500)
	f("a wall past an isolated bad record", EncodingProto, repeat('g', 60)+"x"+repeat('g', 20)+repeat('x', 80), stopUnreadable, 60)
	f("mostly bad, interleaved", EncodingProto, repeat('g', 100)+strings.Repeat("jjjjg", 30), stopLooksJSON, 100)
}
