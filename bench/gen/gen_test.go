package gen

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

var testStart = time.Unix(1_700_000_000, 0)

func collect(t *testing.T, cfg Config) (*Truth, [][]byte) {
	t.Helper()
	var msgs [][]byte
	truth, err := Generate(cfg, func(b []byte) error {
		msgs = append(msgs, b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if truth.Messages != len(msgs) {
		t.Fatalf("truth counts %d messages, emit saw %d", truth.Messages, len(msgs))
	}
	return truth, msgs
}

func TestDeterministic(t *testing.T) {
	cfg := Config{Seed: 9, Traces: 800, Start: testStart}
	t1, m1 := collect(t, cfg)
	t2, m2 := collect(t, cfg)
	if !reflect.DeepEqual(t1, t2) {
		t.Fatal("two runs with the same seed have different truths")
	}
	if len(m1) != len(m2) {
		t.Fatalf("two runs with the same seed: %d and %d messages", len(m1), len(m2))
	}
	for i := range m1 {
		if !bytes.Equal(m1[i], m2[i]) {
			t.Fatalf("message %d differs between runs with the same seed", i)
		}
	}

	// Only timestamps follow Start.
	cfg.Start = time.Time{}
	t3, _ := collect(t, cfg)
	if !reflect.DeepEqual(t1, t3) {
		t.Fatal("the truth depends on Start")
	}

	t4, _ := collect(t, Config{Seed: 10, Traces: 800, Start: testStart})
	for id := range t4.SpansByTrace {
		if _, ok := t1.SpansByTrace[id]; ok {
			t.Fatalf("seeds 9 and 10 both produced trace %x", id)
		}
	}
}

// decoded is what a test learns by decoding every message.
type decoded struct {
	spans     map[[16]byte]int
	roots     map[[16]byte]ptrace.Span
	rootSvc   map[[16]byte]string
	errs      map[[16]byte]bool
	msgsOf    map[[16]byte]map[int]bool
	kinds     map[ptrace.SpanKind]int
	events    int
	ids       map[[8]byte]bool
	byID      map[[8]byte]ptrace.Span
	minStart  time.Time
	maxEnd    time.Time
	resources int
}

func decode(t *testing.T, un ptrace.Unmarshaler, msgs [][]byte) *decoded {
	t.Helper()
	d := &decoded{
		spans: map[[16]byte]int{}, roots: map[[16]byte]ptrace.Span{}, rootSvc: map[[16]byte]string{},
		errs: map[[16]byte]bool{}, msgsOf: map[[16]byte]map[int]bool{}, kinds: map[ptrace.SpanKind]int{},
		ids: map[[8]byte]bool{}, byID: map[[8]byte]ptrace.Span{},
	}
	for i, m := range msgs {
		td, err := un.UnmarshalTraces(m)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		resources := map[string]bool{}
		for _, rs := range td.ResourceSpans().All() {
			d.resources++
			attrs := rs.Resource().Attributes()
			svc, ok := attrs.Get("service.name")
			if !ok {
				t.Fatalf("message %d: resource without service.name", i)
			}
			host, _ := attrs.Get("host.name")
			for _, k := range []string{"service.version", "host.name", "deployment.environment.name"} {
				if _, ok := attrs.Get(k); !ok {
					t.Fatalf("message %d: resource %s without %s", i, svc.Str(), k)
				}
			}
			if key := svc.Str() + "/" + host.Str(); resources[key] {
				t.Fatalf("message %d: resource %s appears twice: spans are not grouped", i, key)
			} else {
				resources[key] = true
			}
			scopes := map[string]bool{}
			for _, ss := range rs.ScopeSpans().All() {
				if name := ss.Scope().Name(); name == "" || ss.Scope().Version() == "" || scopes[name] {
					t.Fatalf("message %d: scope %q unnamed, unversioned or repeated", i, name)
				} else {
					scopes[name] = true
				}
				for _, sp := range ss.Spans().All() {
					id := [16]byte(sp.TraceID())
					sid := [8]byte(sp.SpanID())
					if sp.TraceID().IsEmpty() || sp.SpanID().IsEmpty() {
						t.Fatalf("message %d: span with an empty ID", i)
					}
					if d.ids[sid] {
						t.Fatalf("span ID %x repeated", sid)
					}
					d.ids[sid] = true
					d.byID[sid] = sp
					d.spans[id]++
					d.kinds[sp.Kind()]++
					if d.msgsOf[id] == nil {
						d.msgsOf[id] = map[int]bool{}
					}
					d.msgsOf[id][i] = true
					if sp.ParentSpanID().IsEmpty() {
						if _, dup := d.roots[id]; dup {
							t.Fatalf("trace %x has two roots", id)
						}
						d.roots[id] = sp
						d.rootSvc[id] = svc.Str()
					}
					if sp.Status().Code() == ptrace.StatusCodeError {
						d.errs[id] = true
						if sp.Status().Message() == "" {
							t.Fatalf("error span %x has no status message", sid)
						}
						if c, ok := sp.Attributes().Get("http.response.status_code"); ok && c.Int() != 500 {
							t.Fatalf("error span %x has HTTP status %d, want 500", sid, c.Int())
						}
					}
					d.events += sp.Events().Len()
					st, en := sp.StartTimestamp().AsTime(), sp.EndTimestamp().AsTime()
					if en.Before(st) {
						t.Fatalf("span %x ends before it starts", sid)
					}
					if d.minStart.IsZero() || st.Before(d.minStart) {
						d.minStart = st
					}
					if en.After(d.maxEnd) {
						d.maxEnd = en
					}
				}
			}
		}
	}
	return d
}

// TestTruthMatchesMessages decodes every message with the Collector's own
// unmarshaler and checks it against Truth and the promises of the package
// doc: trees, shares, durations, and spread over messages.
func TestTruthMatchesMessages(t *testing.T) {
	const traces = 5000
	truth, msgs := collect(t, Config{Seed: 1, Traces: traces, Start: testStart})
	d := decode(t, &ptrace.ProtoUnmarshaler{}, msgs)

	spans := 0
	for _, n := range d.spans {
		spans += n
	}
	if truth.Traces != traces || len(d.spans) != traces || spans != truth.Spans || len(d.ids) != spans {
		t.Fatalf("decoded %d traces, %d spans; truth says %d, %d", len(d.spans), spans, truth.Traces, truth.Spans)
	}
	if want := (truth.Spans + 49) / 50; truth.Messages != want {
		t.Errorf("%d messages for %d spans at 50 a message, want %d", truth.Messages, truth.Spans, want)
	}

	byService, byRoute, errorKeys := map[string]int{}, map[string]int{}, map[string]int{}
	spread := 0
	for id, n := range truth.SpansByTrace {
		root, ok := d.roots[id]
		if d.spans[id] != n || !ok {
			t.Fatalf("trace %x: %d spans, root %v; truth says %d spans", id, d.spans[id], ok, n)
		}
		if root.Kind() != ptrace.SpanKindServer {
			t.Fatalf("trace %x: root is %v, want SERVER", id, root.Kind())
		}
		_, isErr := truth.ErrorTraces[id]
		if isErr != d.errs[id] {
			t.Fatalf("trace %x: has an error span: %v; truth says %v", id, d.errs[id], isErr)
		}
		dur := root.EndTimestamp().AsTime().Sub(root.StartTimestamp().AsTime())
		if _, isSlow := truth.SlowTraces[id]; isSlow && (dur < SlowMin || dur > SlowMax) || !isSlow && dur >= NormalMax {
			t.Fatalf("trace %x: root lasts %v; slow: %v", id, dur, isSlow)
		}
		if len(d.msgsOf[id]) > 1 {
			spread++
		}
		route, _ := root.Attributes().Get("http.route")
		key := d.rootSvc[id] + " " + route.Str()
		byService[d.rootSvc[id]]++
		byRoute[key]++
		if isErr {
			errorKeys[key]++
		}
	}
	for name, got := range map[string][2]map[string]int{
		"ByService": {byService, truth.ByService}, "ByRoute": {byRoute, truth.ByRoute}, "ErrorKeys": {errorKeys, truth.ErrorKeys},
	} {
		if !reflect.DeepEqual(got[0], got[1]) {
			t.Errorf("%s from the messages: %v; truth says %v", name, got[0], got[1])
		}
	}
	if len(truth.ByService) != 8 {
		t.Errorf("roots in %d services, want all 8: %v", len(truth.ByService), truth.ByService)
	}

	// Every child lies in its trace and within its parent's time window,
	// except that a CONSUMER runs after its PRODUCER has returned, within
	// the window of the producer's parent.
	for sid, sp := range d.byID {
		if sp.ParentSpanID().IsEmpty() {
			continue
		}
		p, ok := d.byID[[8]byte(sp.ParentSpanID())]
		if !ok || p.TraceID() != sp.TraceID() {
			t.Fatalf("span %x: parent %x is missing or in another trace", sid, sp.ParentSpanID())
		}
		if sp.Kind() == ptrace.SpanKindConsumer {
			if p.Kind() != ptrace.SpanKindProducer || sp.StartTimestamp() < p.StartTimestamp() {
				t.Fatalf("consumer span %x: parent is %v starting after it", sid, p.Kind())
			}
			p = d.byID[[8]byte(p.ParentSpanID())]
		}
		if sp.StartTimestamp() < p.StartTimestamp() || sp.EndTimestamp() > p.EndTimestamp() {
			t.Fatalf("span %x [%d, %d] is outside its parent's window [%d, %d]", sid,
				sp.StartTimestamp(), sp.EndTimestamp(), p.StartTimestamp(), p.EndTimestamp())
		}
	}

	for _, k := range []ptrace.SpanKind{ptrace.SpanKindServer, ptrace.SpanKindClient, ptrace.SpanKindInternal,
		ptrace.SpanKindProducer, ptrace.SpanKindConsumer} {
		if d.kinds[k] == 0 {
			t.Errorf("no %v spans", k)
		}
	}
	if d.events == 0 {
		t.Error("no exception events on error spans")
	}
	if d.resources < 2*len(msgs) {
		t.Errorf("%d resources in %d messages: messages should mix services", d.resources, len(msgs))
	}
	if d.minStart.Before(testStart) || d.maxEnd.After(testStart.Add(5*time.Minute)) {
		t.Errorf("spans from %v to %v; want within five minutes after %v", d.minStart, d.maxEnd, testStart)
	}

	share := func(n int) float64 { return float64(n) / float64(truth.Traces) }
	if s := share(len(truth.ErrorTraces)); s < 0.012 || s > 0.028 {
		t.Errorf("error share %.3f, configured 0.02", s)
	}
	if s := share(len(truth.SlowTraces)); s < 0.012 || s > 0.028 {
		t.Errorf("slow share %.3f, configured 0.02", s)
	}
	if s := share(spread); s < 0.5 {
		t.Errorf("only %.0f%% of traces spread over more than one message", 100*s)
	}
	if mean := float64(truth.Spans) / float64(truth.Traces); mean < 7.5 || mean > 8.5 {
		t.Errorf("mean spans per trace %.2f, configured 8", mean)
	}
	single, large := 0, 0
	for id, n := range truth.SpansByTrace {
		switch {
		case n > 24:
			t.Fatalf("trace %x has %d spans, more than three times the mean", id, n)
		case n == 1:
			single++
		case n > 16:
			large++
		}
	}
	if single == 0 || large == 0 {
		t.Errorf("%d lone roots and %d traces over twice the mean: sizes do not vary enough", single, large)
	}
}

// TestRootsArriveLate checks that children often come before their root,
// as they do when a root span ends (and is exported) last.
func TestRootsArriveLate(t *testing.T) {
	truth, msgs := collect(t, Config{Seed: 3, Traces: 1000, Start: testStart})
	seen := map[[16]byte]bool{}
	late := 0
	for _, m := range msgs {
		td, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, rs := range td.ResourceSpans().All() {
			for _, ss := range rs.ScopeSpans().All() {
				for _, sp := range ss.Spans().All() {
					id := [16]byte(sp.TraceID())
					if sp.ParentSpanID().IsEmpty() && seen[id] {
						late++
					}
					seen[id] = true
				}
			}
		}
	}
	if late < truth.Traces/2 {
		t.Errorf("only %d of %d roots come after one of their children", late, truth.Traces)
	}
}

// TestJSONRoundTrip checks that otlp_json carries the same data as
// otlp_proto: each JSON message, decoded by the Collector's JSON unmarshaler
// and re-encoded as protobuf, is byte for byte the proto message.
func TestJSONRoundTrip(t *testing.T) {
	cfg := Config{Seed: 5, Traces: 1000, Start: testStart}
	truth, protos := collect(t, cfg)
	cfg.Encoding = EncodingJSON
	jtruth, jsons := collect(t, cfg)
	if !reflect.DeepEqual(truth, jtruth) || len(protos) != len(jsons) {
		t.Fatal("the encoding changed the traffic")
	}
	for i := range jsons {
		if !bytes.HasPrefix(jsons[i], []byte(`{"resourceSpans":[`)) {
			t.Fatalf("message %d is not OTLP/JSON: %.40s", i, jsons[i])
		}
		td, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(jsons[i])
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		b, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, protos[i]) {
			t.Fatalf("message %d: JSON and proto encodings differ", i)
		}
	}
	d := decode(t, &ptrace.JSONUnmarshaler{}, jsons)
	if len(d.ids) != truth.Spans {
		t.Fatalf("decoded %d spans from JSON, truth says %d", len(d.ids), truth.Spans)
	}
}

func TestConfig(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		err  string // substring of the error, "" for none
	}{
		{"defaults", Config{Traces: 10}, ""},
		{"one service", Config{Traces: 200, Services: 1}, ""},
		{"many services", Config{Traces: 200, Services: 40}, ""},
		{"one span each", Config{Traces: 100, SpansPerTrace: 1}, ""},
		{"no errors, all slow", Config{Traces: 100, ErrorShare: -1, SlowShare: 1}, ""},
		{"no traces", Config{}, ""},
		{"bad encoding", Config{Traces: 1, Encoding: "zipkin"}, "Encoding"},
		{"negative traces", Config{Traces: -1}, "Traces"},
		{"share above one", Config{Traces: 1, ErrorShare: 2}, "ErrorShare"},
		{"every problem", Config{Traces: -1, SlowShare: 3}, "Traces must not be negative, got -1\ngen: SlowShare"},
	} {
		t.Run(c.name, func(t *testing.T) {
			truth, err := Generate(c.cfg, func([]byte) error { return nil })
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one about %s", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if truth.Traces != c.cfg.Traces {
				t.Fatalf("%d traces, want %d", truth.Traces, c.cfg.Traces)
			}
			if c.cfg.ErrorShare < 0 && len(truth.ErrorTraces) > 0 {
				t.Fatal("error traces although ErrorShare is negative")
			}
			if c.cfg.SlowShare == 1 && len(truth.SlowTraces) != truth.Traces {
				t.Fatal("not every trace is slow although SlowShare is 1")
			}
			if c.cfg.SpansPerTrace == 1 && truth.Spans != truth.Traces {
				t.Fatalf("%d spans in %d traces of one span", truth.Spans, truth.Traces)
			}
		})
	}
	d := Config{}.WithDefaults()
	if d.Services != 8 || d.SpansPerTrace != 8 || d.ErrorShare != 0.02 || d.SlowShare != 0.02 ||
		d.SpansPerMessage != 50 || d.Encoding != EncodingProto || d.Start.IsZero() {
		t.Errorf("defaults: %+v", d)
	}
}

func TestEmitErrorStops(t *testing.T) {
	n := 0
	stop := errStop{}
	_, err := Generate(Config{Traces: 1000}, func([]byte) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Fatalf("error %v after %d messages; want the emit error after 3", err, n)
	}
}

type errStop struct{}

func (errStop) Error() string { return "stop" }

func TestProduce(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("t"),
		kgo.FetchMaxWait(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	truth, err := Produce(ctx, cl, "t", Config{Seed: 1, Traces: 500})
	if err != nil {
		t.Fatal(err)
	}
	parts := map[int32]int{}
	keys := map[string]bool{}
	spans := map[[16]byte]int{}
	total := 0
	for n := 0; n < truth.Messages; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d messages", n, truth.Messages)
		}
		if err := fs.Err(); err != nil {
			t.Fatal(err)
		}
		for r := range fs.RecordsAll() {
			n++
			parts[r.Partition]++
			keys[string(r.Key)] = true
			td, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(r.Value)
			if err != nil {
				t.Fatal(err)
			}
			for _, rs := range td.ResourceSpans().All() {
				for _, ss := range rs.ScopeSpans().All() {
					for _, sp := range ss.Spans().All() {
						spans[[16]byte(sp.TraceID())]++
						total++
					}
				}
			}
		}
	}
	if total != truth.Spans || !reflect.DeepEqual(spans, truth.SpansByTrace) {
		t.Fatalf("consumed %d spans in %d traces; produced %d in %d", total, len(spans), truth.Spans, truth.Traces)
	}
	if len(parts) < 2 {
		t.Fatalf("records went to partitions %v; want them spread", parts)
	}
	if len(keys) != truth.Messages {
		t.Fatalf("%d distinct keys for %d records", len(keys), truth.Messages)
	}
	t.Logf("%d records over partitions %v", truth.Messages, parts)
}

func TestProduceCanceled(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Produce(ctx, cl, "t", Config{Traces: 100}); err == nil {
		t.Fatal("Produce with a canceled context succeeded")
	}
}

// BenchmarkGenerate reports the cost of generating and encoding traffic; the
// demo and the end-to-end tests generate 20,000 traces (about 160,000
// spans) at a time.
func BenchmarkGenerate(b *testing.B) {
	for _, enc := range []string{EncodingProto, EncodingJSON} {
		b.Run(enc, func(b *testing.B) {
			b.ReportAllocs()
			spans, size := 0, 0
			for b.Loop() {
				truth, err := Generate(Config{Seed: 1, Traces: 20_000, Encoding: enc}, func(m []byte) error {
					size += len(m)
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				spans += truth.Spans
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(spans), "ns/span")
			b.ReportMetric(float64(size)/float64(spans), "B/span")
		})
	}
}
