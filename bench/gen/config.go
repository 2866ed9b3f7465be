package gen

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Config shapes the traffic. Zero fields take the defaults of WithDefaults.
type Config struct {
	// Seed makes the traffic reproducible: everything but timestamps
	// derives from it.
	Seed int64
	// Traces is the number of traces to generate.
	Traces int
	// Services is the number of distinct services (default 8). The first
	// 16 have shop-like names (frontend, checkout, cart, ...); more get
	// generic names (service17, ...).
	Services int
	// SpansPerTrace is the mean number of spans per trace (default 8). One
	// trace in 20 is a lone root span; the others have 2..2*mean-1 spans.
	SpansPerTrace int
	// ErrorShare is the share of traces with at least one ERROR span
	// (default 0.02; negative means none).
	ErrorShare float64
	// SlowShare is the share of traces whose root lasts SlowMin or more
	// (default 0.02; negative means none). Other roots last under NormalMax.
	SlowShare float64
	// SpansPerMessage is the number of spans per Kafka message (default 50).
	SpansPerMessage int
	// Encoding is "otlp_proto" (default) or "otlp_json", the kafkaexporter's
	// names for the two encodings.
	Encoding string
	// Start is the start of the first trace; zero means time.Now(). Roots
	// start over at most about two minutes after it, so the timestamps
	// stay plausible to a consumer that checks clock skew.
	Start time.Time
	// Window is how many traces are in flight at once (default 200). The
	// spans of a message are drawn from these, so a larger window spreads
	// each trace over more messages.
	Window int
}

// Slow roots last at least SlowMin (and at most SlowMax); other roots last
// less than NormalMax. The gap between NormalMax and SlowMin lets a latency
// policy with a threshold anywhere in it split the traffic exactly.
const (
	SlowMin   = 3 * time.Second
	SlowMax   = 10 * time.Second
	NormalMax = 1500 * time.Millisecond
)

// Encodings, as the kafkaexporter names them.
const (
	EncodingProto = "otlp_proto"
	EncodingJSON  = "otlp_json"
)

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Services == 0 {
		c.Services = 8
	}
	if c.SpansPerTrace == 0 {
		c.SpansPerTrace = 8
	}
	if c.ErrorShare == 0 {
		c.ErrorShare = 0.02
	}
	if c.SlowShare == 0 {
		c.SlowShare = 0.02
	}
	if c.SpansPerMessage == 0 {
		c.SpansPerMessage = 50
	}
	if c.Encoding == "" {
		c.Encoding = EncodingProto
	}
	if c.Window == 0 {
		c.Window = 200
	}
	if c.Start.IsZero() {
		c.Start = time.Now()
	}
	return c
}

// validate reports every problem with a defaulted config, naming the field.
func (c Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Traces < 0 {
		bad("gen: Traces must not be negative, got %d", c.Traces)
	}
	if c.Services < 1 {
		bad("gen: Services must be positive, got %d", c.Services)
	}
	if c.SpansPerTrace < 1 {
		bad("gen: SpansPerTrace must be positive, got %d", c.SpansPerTrace)
	}
	if c.ErrorShare > 1 {
		bad("gen: ErrorShare must be at most 1, got %v", c.ErrorShare)
	}
	if c.SlowShare > 1 {
		bad("gen: SlowShare must be at most 1, got %v", c.SlowShare)
	}
	if c.SpansPerMessage < 1 {
		bad("gen: SpansPerMessage must be positive, got %d", c.SpansPerMessage)
	}
	if c.Window < 1 {
		bad("gen: Window must be positive, got %d", c.Window)
	}
	if c.Encoding != EncodingProto && c.Encoding != EncodingJSON {
		bad("gen: Encoding %q is not allowed (allowed: %s)", c.Encoding, strings.Join([]string{EncodingProto, EncodingJSON}, ", "))
	}
	return errors.Join(errs...)
}

// Truth is what was generated, for checking a pipeline's output against.
type Truth struct {
	Traces, Spans, Messages int
	// ErrorTraces maps the ID of each trace with an ERROR span to its span count.
	ErrorTraces map[[16]byte]int
	// SlowTraces maps the ID of each trace whose root lasts SlowMin or more
	// (whether or not it also has an error) to its span count.
	SlowTraces map[[16]byte]int
	// SpansByTrace maps every trace ID to its span count.
	SpansByTrace map[[16]byte]int
	// ByService counts traces by root service name.
	ByService map[string]int
	// ByRoute counts traces by "service route": the root's service name, a
	// space, and the root's http.route.
	ByRoute map[string]int
	// ErrorKeys counts error traces by "service route", as ByRoute.
	ErrorKeys map[string]int
	// LastExportErrors maps the ID of each error trace whose only error
	// span is on the service instance that exports last to its span count
	// (Deliver only).
	LastExportErrors map[[16]byte]int
}

func newTruth() *Truth {
	return &Truth{
		ErrorTraces:  map[[16]byte]int{},
		SlowTraces:   map[[16]byte]int{},
		SpansByTrace: map[[16]byte]int{},
		ByService:    map[string]int{},
		ByRoute:      map[string]int{},
		ErrorKeys:    map[string]int{},
	}
}
