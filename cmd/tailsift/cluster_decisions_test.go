package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/tailsift/tailsift/bench/gen"
	"github.com/tailsift/tailsift/cluster"
	"github.com/tailsift/tailsift/sampler"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// decision is what every archived row of a kept trace carries of its
// decision.
type decision struct {
	decidedAt  time.Time
	sampleRate float64
	reason     string
}

// TestClusterKeptDecisionsFollowRingChange: traces kept by three nodes,
// then a fourth joins and takes over some of them; a late span of such a
// trace, reaching the new owner, is archived under the decision made
// before the join (same decided_at, sample_rate, keep_reason), not decided
// alone there.
func TestClusterKeptDecisionsFollowRingChange(t *testing.T) {
	b, adm, _, client := startClusterTest(t, 0)
	dir := t.TempDir()
	n0, n1, n2, g0 := startThree(t, b.Addr(), dir)
	waitGroupStable(t, adm, "cluster", 3, time.Minute)
	ctx := context.Background()
	if _, err := gen.Produce(ctx, client, "otlp_spans", gen.Config{Seed: 41, Traces: 3_000}); err != nil {
		t.Fatal(err)
	}
	waitCommitted(t, adm, "cluster", "otlp_spans", 4*time.Minute)

	// The kept traces, once archived, and which of them the fourth node
	// will own.
	ring := cluster.NewRing("n0", []string{"n0", "n1", "n2", "n3"})
	before := map[string]decision{}
	for deadline := time.Now().Add(time.Minute); len(before) == 0; time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			t.Fatal("no kept trace archived within a minute")
		}
		before = keptDecisions(t, dir, false)
	}
	var moved []string
	for id := range before {
		var tid sampler.TraceID
		if _, err := hex.Decode(tid[:], []byte(id)); err != nil {
			t.Fatal(err)
		}
		if owner, _ := ring.Owner(&tid); owner == "n3" && len(moved) < 40 {
			moved = append(moved, id)
		}
	}
	if len(moved) < 5 {
		t.Fatalf("only %d of %d kept traces move to n3", len(moved), len(before))
	}

	n3 := clusterProc(t, b.Addr(), dir, "n3", freeAddr(t), g0)
	waitGroupStable(t, adm, "cluster", 4, time.Minute)
	time.Sleep(3 * time.Second) // gossip and the hand-off of decisions

	if err := client.ProduceSync(ctx, &kgo.Record{Topic: "otlp_spans", Value: lateSpans(t, moved)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitCommitted(t, adm, "cluster", "otlp_spans", 2*time.Minute)
	stopAll(t, n0, n1, n2, n3)

	after := keptDecisions(t, dir, true)
	for _, id := range moved {
		got, ok := after[id]
		switch {
		case !ok:
			t.Errorf("trace %s: late span not archived; want it kept under the decision made before the join", id)
		case !got.decidedAt.Equal(before[id].decidedAt) || got.sampleRate != before[id].sampleRate || got.reason != before[id].reason:
			t.Errorf("trace %s: late span archived with %+v, want the original decision %+v", id, got, before[id])
		}
	}
}

// keptDecisions reads the archive: by trace ID, the decision on the rows
// of kept traces (late false), or on the late spans lateSpans wrote (late
// true).
func keptDecisions(t *testing.T, dir string, late bool) map[string]decision {
	t.Helper()
	db := openDuckDB(t)
	where := "NOT late"
	if late {
		where = "late AND name = 'late span'"
	}
	rows, err := db.Query(fmt.Sprintf(`SELECT trace_id, any_value(decided_at), any_value(sample_rate), any_value(keep_reason)
		FROM read_parquet('%s/**/*.parquet', hive_partitioning = true) WHERE %s GROUP BY trace_id`, dir, where))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]decision{}
	for rows.Next() {
		var id string
		var d decision
		if err := rows.Scan(&id, &d.decidedAt, &d.sampleRate, &d.reason); err != nil {
			t.Fatal(err)
		}
		out[id] = d
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// lateSpans encodes one span, without error, for each trace ID (hex).
func lateSpans(t *testing.T, ids []string) []byte {
	t.Helper()
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "latecomer")
	spans := rs.ScopeSpans().AppendEmpty().Spans()
	now := time.Now()
	for i, id := range ids {
		var tid pcommon.TraceID
		if _, err := hex.Decode(tid[:], []byte(id)); err != nil {
			t.Fatal(err)
		}
		sp := spans.AppendEmpty()
		sp.SetTraceID(tid)
		sp.SetSpanID(pcommon.SpanID{0xfe, 0xed, 7: byte(i + 1)})
		sp.SetParentSpanID(pcommon.SpanID{1})
		sp.SetName("late span")
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(now))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Millisecond)))
	}
	b, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
