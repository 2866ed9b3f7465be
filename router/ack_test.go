package router

import (
	"context"
	"testing"
	"time"

	"github.com/tailsift/tailsift/sampler"
)

// TestRouteAckBoundToPeer: an acknowledgement settles a batch only when it
// comes from the node the batch was sent to, and sequence numbers start
// at a random point, not at the clock, so nobody can guess them.
func TestRouteAckBoundToPeer(t *testing.T) {
	ctx := context.Background()
	localA := &recorder{}
	tr := &loopTransport{rc: NewReceiver(&recorder{}, nil)}
	route := NewRoute(localA, tr, nil, nil)
	route.SetRing(fakeRing{members: map[string]bool{"a": true, "b": true}})
	var src sampler.Pending
	if err := route.Add(ctx, scanAll(t, testMessage(t, 20, 3), &src)); err != nil {
		t.Fatal(err)
	}
	for _, it := range localA.items {
		it.Span.Src.Done()
	}
	tr.rc.mu.Lock()
	seq := tr.rc.pending[0].seq
	tr.rc.mu.Unlock()

	route.Acked("c", []uint64{seq})
	if src.Settled() || route.InFlight() != 1 {
		t.Fatalf("another node's acknowledgement settled a batch sent to b (in flight %d)", route.InFlight())
	}
	route.Acked("b", []uint64{seq})
	if !src.Settled() || route.InFlight() != 0 {
		t.Fatalf("b's acknowledgement: settled=%v, in flight %d", src.Settled(), route.InFlight())
	}

	now := uint64(time.Now().UnixNano())
	if d := max(seq, now) - min(seq, now); d < uint64(24*time.Hour) {
		t.Errorf("sequence number %d is within a day of the clock (%d): guessable", seq, now)
	}
	if other := NewRoute(localA, tr, nil, nil); other.seq.Load() == route.seq.Load()-1 {
		t.Errorf("two routes start at the same sequence number")
	}
}
