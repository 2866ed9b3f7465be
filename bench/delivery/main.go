// Command delivery measures, with the generator's delivery model (SDK
// export timers at independent phases and a gateway Collector's batch),
// when a trace's spans reach Kafka relative to its root: the numbers the
// sampler's completion settings must cover. It runs the model in its own
// time, not in real time, so it takes seconds.
//
//	go run ./bench/delivery -traces 20000 -intervals 1s,2s,5s,10s
//
// With -brokers it produces the delivery to Kafka in real time instead, at
// the first interval, as load for a node:
//
//	go run ./bench/delivery -brokers 127.0.0.1:9092 -traces 120000 -rate 2000 -intervals 5s
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/tailsift/tailsift/bench/gen"
	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	traces := flag.Int("traces", 20_000, "traces per export interval")
	rate := flag.Float64("rate", 100, "traces started per second")
	intervals := flag.String("intervals", "1s,2s,3s,4s,5s,6s,7s,8s,9s,10s", "SDK export intervals to measure, comma-separated")
	byID := flag.Bool("by-trace-id", false, "one record per trace (partition_traces_by_id)")
	brokers := flag.String("brokers", "", "produce to these Kafka brokers in real time instead of measuring")
	topic := flag.String("topic", "otlp_spans", "topic to produce to")
	flag.Parse()
	if *brokers != "" {
		iv, err := time.ParseDuration(strings.Split(*intervals, ",")[0])
		if err == nil {
			err = produce(*brokers, *topic, gen.Delivery{Config: gen.Config{Seed: 1, Traces: *traces}, Rate: *rate, ExportInterval: iv, ByTraceID: *byID})
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}

	fmt.Println("interval  after root p50/p99/max   gap after root p99/p99.9/max   first to last max")
	for _, s := range strings.Split(*intervals, ",") {
		iv, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		arrivals := map[[16]byte][]time.Duration{} // record times, from the start
		roots := map[[16]byte]time.Duration{}
		start := time.Unix(1_700_000_000, 0)
		d := gen.Delivery{Config: gen.Config{Seed: 1, Traces: *traces, Start: start}, Rate: *rate, ExportInterval: iv, ByTraceID: *byID}
		_, err = gen.Deliver(d, func(r gen.Record) error {
			at := r.At.Sub(start)
			for _, s := range r.Spans {
				arrivals[s.Trace] = append(arrivals[s.Trace], at)
				if s.Root {
					roots[s.Trace] = at
				}
			}
			return nil
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		var after, gaps []time.Duration
		var span time.Duration
		for id, a := range arrivals {
			root := roots[id]
			slices.Sort(a)
			span = max(span, a[len(a)-1]-a[0])
			// The sampler measures quiet from the last span once the root
			// is in: the gap it must bridge is the longest between
			// arrivals from the root's on.
			var gap time.Duration
			prev := root
			for _, x := range a {
				if x > root {
					after = append(after, x-root)
					gap = max(gap, x-prev)
					prev = x
				}
			}
			gaps = append(gaps, gap)
		}
		slices.Sort(after)
		slices.Sort(gaps)
		q := func(s []time.Duration, p float64) string {
			if len(s) == 0 {
				return "-"
			}
			return s[min(len(s)-1, int(p*float64(len(s))))].Round(10 * time.Millisecond).String()
		}
		fmt.Printf("%-8v  %-7s %-7s %-7s       %-7s %-7s %-7s         %v\n", iv,
			q(after, 0.5), q(after, 0.99), q(after, 1), q(gaps, 0.99), q(gaps, 0.999), q(gaps, 1), span.Round(10*time.Millisecond))
	}
}

// produce delivers d to topic in real time.
func produce(brokers, topic string, d gen.Delivery) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.ProducerBatchMaxBytes(16<<20))
	if err != nil {
		return err
	}
	defer cl.Close()
	start := time.Now()
	truth, err := gen.ProduceDelivery(context.Background(), cl, topic, d)
	if err != nil {
		return err
	}
	fmt.Printf("produced %d traces, %d spans, %d records in %v\n", truth.Traces, truth.Spans, truth.Messages, time.Since(start).Round(time.Second))
	return nil
}
