package cluster

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
)

// decisionsRecorder is a Handler that also takes decisions.
type decisionsRecorder struct {
	*recorder
	mu       sync.Mutex
	payloads [][]byte
	from     []string
}

func (r *decisionsRecorder) HandleDecisions(_ context.Context, from string, payload []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.payloads = append(r.payloads, payload)
	r.from = append(r.from, from)
	return nil
}

// Decisions reach the peer's DecisionsHandler intact, compressible or not,
// on the connection batches use; a peer without one refuses them, and the
// sender hears so.
func TestTransportSendsDecisions(t *testing.T) {
	var dir directory
	hb := &decisionsRecorder{recorder: newRecorder()}
	a := startTransport(t, &dir, "a", "", nil, newRecorder())
	startTransport(t, &dir, "b", "", nil, hb)
	startTransport(t, &dir, "c", "", nil, newRecorder())
	ctx := context.Background()

	payloads := [][]byte{[]byte(strings.Repeat("decision ", 1000)), testBatch(3)}
	for _, p := range payloads {
		if err := a.SendDecisions(ctx, "b", p); err != nil {
			t.Fatal(err)
		}
		clear(p) // SendDecisions must not keep it
	}
	if err := a.Send(ctx, "b", testBatch(1), 1); err != nil {
		t.Fatal(err)
	}
	want := [][]byte{[]byte(strings.Repeat("decision ", 1000)), testBatch(3)}
	hb.mu.Lock()
	if len(hb.payloads) != len(want) {
		t.Fatalf("b took %d decision payloads, want %d", len(hb.payloads), len(want))
	}
	for i := range want {
		if !bytes.Equal(hb.payloads[i], want[i]) || hb.from[i] != "a" {
			t.Fatalf("payload %d arrived altered or from %q", i, hb.from[i])
		}
	}
	hb.mu.Unlock()
	if n := hb.count(); n != 1 {
		t.Fatalf("b handled %d batches, want 1: decisions are not batches", n)
	}

	err := a.SendDecisions(ctx, "c", []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "takes no decisions") {
		t.Fatalf("sending decisions to a node without a DecisionsHandler: %v, want a refusal", err)
	}
	if err := a.Send(ctx, "c", testBatch(2), 2); err != nil {
		t.Fatalf("the refusal broke the connection: %v", err)
	}
}
