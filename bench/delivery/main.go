// Command delivery measures, with the generator's delivery model (SDK
// export timers at independent phases and a gateway Collector's batch),
// when a trace's spans reach Kafka relative to its root: the numbers the
// sampler's completion settings must cover. It runs the model in its own
// time, not in real time, so it takes seconds.
//
//	go run ./bench/delivery -traces 20000 -intervals 1s,2s,5s,10s
package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/tailsift/tailsift/bench/gen"
)

func main() {
	traces := flag.Int("traces", 20_000, "traces per export interval")
	rate := flag.Float64("rate", 100, "traces started per second")
	intervals := flag.String("intervals", "1s,2s,3s,4s,5s,6s,7s,8s,9s,10s", "SDK export intervals to measure, comma-separated")
	byID := flag.Bool("by-trace-id", false, "one record per trace (partition_traces_by_id)")
	flag.Parse()

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
