package gen

import (
	"encoding/hex"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

// TestDeliver checks the delivery model against what it promises: every
// span written once, in time order; records keyed and grouped as the kafka
// exporter does in both partitioning modes; errors only outside the root's
// service, on the instance that exports last where the truth says so; and
// export timing that really leaves downstream spans seconds behind roots.
func TestDeliver(t *testing.T) {
	for _, byID := range []bool{false, true} {
		t.Run(map[bool]string{false: "mixed", true: "by_trace_id"}[byID], func(t *testing.T) {
			d := Delivery{Config: Config{Seed: 3, Traces: 2000, ErrorShare: 0.1, Start: time.Unix(1_700_000_000, 0)}, ByTraceID: byID}
			type arrival struct {
				at      time.Time
				svc     string
				root    bool
				isError bool
			}
			seen := map[[16]byte][]arrival{}
			var last time.Time
			mixed := 0
			truth, err := Deliver(d, func(rec Record) error {
				if rec.At.Before(last) {
					t.Fatalf("record at %v after one at %v", rec.At, last)
				}
				last = rec.At
				td, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(rec.Value)
				if err != nil {
					t.Fatal(err)
				}
				ids := map[[16]byte]bool{}
				for _, rs := range td.ResourceSpans().All() {
					svc, _ := rs.Resource().Attributes().Get("service.name")
					for _, ss := range rs.ScopeSpans().All() {
						for _, sp := range ss.Spans().All() {
							id := [16]byte(sp.TraceID())
							ids[id] = true
							seen[id] = append(seen[id], arrival{rec.At, svc.Str(), sp.ParentSpanID().IsEmpty(),
								sp.Status().Code() == ptrace.StatusCodeError})
						}
					}
				}
				if len(rec.Spans) != td.SpanCount() {
					t.Fatalf("record lists %d spans, holds %d", len(rec.Spans), td.SpanCount())
				}
				if byID {
					if len(ids) != 1 {
						t.Fatalf("record keyed by trace ID holds %d traces", len(ids))
					}
					for id := range ids {
						if string(rec.Key) != hex.EncodeToString(id[:]) {
							t.Fatalf("record key %q, trace %x", rec.Key, id)
						}
					}
				} else {
					if rec.Key != nil {
						t.Fatalf("record key %q, want none", rec.Key)
					}
					if len(ids) > 1 {
						mixed++
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !byID && mixed == 0 {
				t.Error("no record mixes traces")
			}
			if len(seen) != truth.Traces || truth.Traces != 2000 {
				t.Fatalf("%d traces delivered, truth %d", len(seen), truth.Traces)
			}
			behind := 0 // error traces whose error span arrives 3s or more after the root
			for id, n := range truth.SpansByTrace {
				a := seen[id]
				if len(a) != n {
					t.Fatalf("trace %x: %d of %d spans delivered", id, len(a), n)
				}
				var root arrival
				var latest time.Time
				for _, x := range a {
					if x.root {
						root = x
					}
					if x.at.After(latest) {
						latest = x.at
					}
				}
				_, isErr := truth.ErrorTraces[id]
				_, isLast := truth.LastExportErrors[id]
				errs := 0
				for _, x := range a {
					if !x.isError {
						continue
					}
					errs++
					if x.svc == root.svc {
						t.Fatalf("trace %x: error span in the root's service %s", id, x.svc)
					}
					if isLast && !x.at.Equal(latest) {
						t.Fatalf("trace %x: error span at %v, the trace's last spans at %v", id, x.at, latest)
					}
					if x.at.Sub(root.at) >= 3*time.Second {
						behind++
					}
				}
				if isErr != (errs == 1) {
					t.Fatalf("trace %x: %d error spans, error trace %v", id, errs, isErr)
				}
			}
			errTraces, lastTraces := len(truth.ErrorTraces), len(truth.LastExportErrors)
			t.Logf("error traces %d (%d on the last exporter), %d with the error 3s or more after the root", errTraces, lastTraces, behind)
			if errTraces < 100 || lastTraces < errTraces/3 || lastTraces > 2*errTraces/3 {
				t.Errorf("error traces %d, on the last exporter %d: want at least 100, a third to two thirds of them on the last exporter", errTraces, lastTraces)
			}
			if behind < errTraces/10 {
				t.Errorf("only %d of %d error spans arrive 3s or more after their root", behind, errTraces)
			}
		})
	}
}

// TestDeliverDeterministic: the same delivery gives the same records.
func TestDeliverDeterministic(t *testing.T) {
	d := Delivery{Config: Config{Seed: 9, Traces: 300, Start: time.Unix(1_700_000_000, 0)}, ExportInterval: 2 * time.Second}
	run := func() (out []Record) {
		if _, err := Deliver(d, func(r Record) error { out = append(out, r); return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	a, b := run(), run()
	if len(a) != len(b) || len(a) == 0 {
		t.Fatalf("%d and %d records", len(a), len(b))
	}
	for i := range a {
		if !a[i].At.Equal(b[i].At) || string(a[i].Value) != string(b[i].Value) {
			t.Fatalf("record %d differs", i)
		}
	}
}
