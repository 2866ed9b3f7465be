package gen

import (
	"fmt"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Generate produces the traffic of cfg, calling emit once per message value,
// in order, on the calling goroutine. emit may keep the slice. An error from
// emit stops generation and is returned with the truth so far.
//
// A window of cfg.Window traces is kept in flight. Each message is filled
// with runs of one to four spans taken from randomly chosen in-flight
// traces, so a message mixes many traces and a trace is spread over many
// messages, its spans in random order.
func Generate(cfg Config, emit func(msg []byte) error) (*Truth, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	g := newTraceGen(cfg)
	enc := newEncoder(g.svcs)
	var marshal func(ptrace.Traces) ([]byte, error)
	if cfg.Encoding == EncodingJSON {
		marshal = (&ptrace.JSONMarshaler{}).MarshalTraces
	} else {
		marshal = (&ptrace.ProtoMarshaler{}).MarshalTraces
	}

	// inflight is a trace in the window and how many of its spans are sent.
	type inflight struct {
		spans []span
		sent  int
	}
	window := make([]inflight, 0, cfg.Window)
	// done holds traces whose last spans are in msg: their slices are
	// recycled only after msg is encoded.
	var done [][]span
	msg := make([]span, 0, cfg.SpansPerMessage+4)
	flush := func() error {
		if len(msg) == 0 {
			return nil
		}
		b, err := marshal(enc.encode(msg))
		if err != nil {
			return fmt.Errorf("gen: encoding message %d: %w", g.truth.Messages, err)
		}
		g.truth.Messages++
		msg = msg[:0]
		for _, s := range done {
			g.recycle(s)
		}
		done = done[:0]
		return emit(b)
	}
	made := 0
	for made < cfg.Traces || len(window) > 0 {
		for len(window) < cfg.Window && made < cfg.Traces {
			window = append(window, inflight{spans: g.trace()})
			made++
		}
		i := g.r.IntN(len(window))
		w := &window[i]
		take := min(len(w.spans)-w.sent, 1+g.r.IntN(4), cfg.SpansPerMessage-len(msg))
		msg = append(msg, w.spans[w.sent:w.sent+take]...)
		w.sent += take
		if w.sent == len(w.spans) {
			done = append(done, w.spans)
			window[i] = window[len(window)-1]
			window = window[:len(window)-1]
		}
		if len(msg) >= cfg.SpansPerMessage {
			if err := flush(); err != nil {
				return g.truth, err
			}
		}
	}
	return g.truth, flush()
}
