package main

import (
	"context"
	"flag"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tailsift/tailsift/bench/gen"
)

var long = flag.Bool("long", false, "run TestDeliveryDefaults at full scale: 20,000 traces over about two minutes")

// TestDeliveryDefaults delivers traces as OpenTelemetry SDKs and a gateway
// Collector do, in real time: every service instance exports on its own
// timer of several seconds at its own phase, so a trace's root often
// reaches Kafka seconds before its downstream spans, and error traces
// carry their only error span outside the root's service, often on the
// instance that exports last. Records arrive both ways the Collector's
// kafka exporter writes them (mixing traces with an empty key, and one per
// trace keyed by ID).
//
// A node with the default configuration must archive every error trace
// and every slow trace whole, and see no late span that would have changed
// a decision. A second node reading the same records with the old 3s quiet
// period shows what the defaults prevent: it loses error traces, and its
// lateness metrics and log say so and name the setting to raise.
func TestDeliveryDefaults(t *testing.T) {
	rate, perMode := 40.0, 400
	if *long {
		rate, perMode = 100, 10_000
	}
	b, client := startBroker(t, 8)
	const topic = "otlp_spans"

	var shortLog syncBuffer
	run := func(group string, quiet time.Duration, log *syncBuffer) (*node, func(), string) {
		dir := t.TempDir()
		edit := func(c *Config) {
			def := defaultConfig()
			c.Sampler.QuietPeriod, c.Sampler.MaxWait = def.Sampler.QuietPeriod, def.Sampler.MaxWait
			if quiet > 0 {
				c.Sampler.QuietPeriod = quiet
			}
			c.Kafka.Group = group
			c.GracePeriod = 60 * time.Second
		}
		var n *node
		var stop func()
		if log != nil {
			n, stop = startTestNodeLog(t, b.Addr(), topic, dir, edit, log)
		} else {
			n, stop = startTestNode(t, b.Addr(), topic, dir, edit)
		}
		return n, stop, dir
	}
	began := time.Now()
	def, stopDef, defDir := run("delivery-default", 0, nil)
	short, stopShort, shortDir := run("delivery-3s", 3*time.Second, &shortLog)

	// Both modes at once, on timers of 5s (the SDKs' default) and 9s.
	modes := []gen.Delivery{
		{Config: gen.Config{Seed: 11, Traces: perMode, ErrorShare: 0.25, SlowShare: 0.05},
			Rate: rate, ExportInterval: 5 * time.Second},
		{Config: gen.Config{Seed: 12, Traces: perMode, ErrorShare: 0.25, SlowShare: 0.05},
			Rate: rate, ExportInterval: 9 * time.Second, ByTraceID: true},
	}
	truths := make([]*gen.Truth, len(modes))
	var wg sync.WaitGroup
	errs := make([]error, len(modes))
	for i, d := range modes {
		wg.Go(func() { truths[i], errs[i] = gen.ProduceDelivery(context.Background(), client, topic, d) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	spans := 0
	for _, tr := range truths {
		spans += tr.Spans
	}
	waitDecided(t, def, spans)
	waitDecided(t, short, spans)
	stopDef()
	stopShort()

	check := func(n *node, dir string) (errLost, slowLost, lastLost, errTotal, slowTotal, lastTotal int) {
		archived := archivedSpansByTrace(t, dir)
		for _, tr := range truths {
			for id, want := range tr.ErrorTraces {
				errTotal++
				if archived[id] != want {
					errLost++
					if _, ok := tr.LastExportErrors[id]; ok {
						lastLost++
					}
				}
			}
			lastTotal += len(tr.LastExportErrors)
			for id, want := range tr.SlowTraces {
				slowTotal++
				if archived[id] != want {
					slowLost++
				}
			}
		}
		return
	}
	errLost, slowLost, lastLost, errTotal, slowTotal, lastTotal := check(def, defDir)
	t.Logf("defaults: %d traces, %d spans; error traces lost %d of %d (on the last exporter %d of %d), slow traces lost %d of %d",
		2*perMode, spans, errLost, errTotal, lastLost, lastTotal, slowLost, slowTotal)
	if errTotal < perMode/4 || lastTotal < errTotal/4 || slowTotal < perMode/20 {
		t.Fatalf("too few traces to test: %d error (%d on the last exporter), %d slow", errTotal, lastTotal, slowTotal)
	}
	if errLost > 0 || slowLost > 0 {
		t.Errorf("with the defaults %d of %d error traces and %d of %d slow traces were not archived whole", errLost, errTotal, slowLost, slowTotal)
	}
	if c := sumCounter(def.reg, "tailsift_sampler_late_decision_changing_spans_total", "", ""); c != 0 {
		t.Errorf("with the defaults %v late spans would have changed a decision", c)
	}

	errLost, slowLost, lastLost, _, _, _ = check(short, shortDir)
	changing := sumCounter(short.reg, "tailsift_sampler_late_decision_changing_spans_total", "reason", "error")
	t.Logf("quiet_period 3s: error traces lost %d of %d (on the last exporter %d of %d), slow traces lost %d; decision-changing late error spans %v",
		errLost, errTotal, lastLost, lastTotal, slowLost, changing)
	if errLost == 0 {
		t.Fatal("with a 3s quiet period no error trace was lost: the delivery does not test the defaults")
	}
	if changing < float64(errLost) {
		t.Errorf("%d error traces lost but %v late error spans counted", errLost, changing)
	}
	// One line of advice at the first such span, then at most one a minute.
	logged := shortLog.String()
	if n := strings.Count(logged, "after its trace was decided and dropped; raise sampler.quiet_period above"); n < 1 || n > 1+int(time.Since(began)/time.Minute) {
		t.Errorf("%d lines of advice in %v, logged:\n%s", n, time.Since(began).Round(time.Second), logged)
	}
}
