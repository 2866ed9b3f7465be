package sampler

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// KeptDecision is the decision made for a kept trace, as a late span of it
// needs it: the verdict and the summary of the whole trace at decision
// time. When the ring changes, the decisions for traces another node now
// owns go there (TakeAsideDecisions, AdoptDecisions), so a span arriving
// late at the new owner is archived as the rest of its trace was instead
// of being decided alone on that one span.
type KeptDecision struct {
	ID          TraceID
	SampleRate  float64
	Reason      string
	DecidedAt   time.Time
	RootService string
	RootName    string
	Start       int64
	DurationNs  int64
	SpanCount   int
	HasError    bool
	Partial     bool // see Kept.Partial
	Lost        int
}

// keptDecisionOf is the decision k was kept by.
func keptDecisionOf(k *Kept) KeptDecision {
	return KeptDecision{ID: k.ID, SampleRate: k.SampleRate, Reason: k.Reason, DecidedAt: k.DecidedAt,
		RootService: k.RootService, RootName: k.RootName, Start: k.Start, DurationNs: k.DurationNs,
		SpanCount: k.SpanCount, HasError: k.HasError, Partial: k.Partial, Lost: k.Lost}
}

// kept is a Kept, without spans yet, for spans that follow d.
func (d *KeptDecision) kept() Kept {
	return Kept{ID: d.ID, SampleRate: d.SampleRate, Reason: d.Reason, DecidedAt: d.DecidedAt,
		RootService: d.RootService, RootName: d.RootName, Start: d.Start, DurationNs: d.DurationNs,
		SpanCount: d.SpanCount, HasError: d.HasError, Partial: d.Partial, Lost: d.Lost}
}

// putAsideDecisions queues decisions for traces this node does not own.
func (s *Sampler) putAsideDecisions(ds []KeptDecision) {
	if len(ds) == 0 {
		return
	}
	s.asideMu.Lock()
	defer s.asideMu.Unlock()
	s.asideDecisions = append(s.asideDecisions, ds...)
}

// TakeAsideDecisions returns, and forgets, the decisions for kept traces
// this node decided but no longer owns. The shards move them out of their
// caches at the first tick after SetOwner, or in Handoff. The caller sends
// them to the traces' owners, which AdoptDecisions; one that is lost only
// means a late span of its trace is decided alone by the new owner.
func (s *Sampler) TakeAsideDecisions() []KeptDecision {
	s.asideMu.Lock()
	defer s.asideMu.Unlock()
	out := s.asideDecisions
	s.asideDecisions = nil
	return out
}

// AdoptDecisions makes decisions another node made for traces this node
// owns authoritative here: a later span of such a trace is archived late
// with the decision's rate, reason, time and summary, as on the node that
// decided it, and spans of it already buffered here go out that way at
// once. A decision for a trace this node does not own (the ring moved on)
// is set aside again for TakeAsideDecisions. It returns when every shard
// has taken its part, or with ctx.Err().
func (s *Sampler) AdoptDecisions(ctx context.Context, ds []KeptDecision) error {
	if len(ds) == 0 {
		return nil
	}
	parts := make(map[*shard][]KeptDecision)
	for i := range ds {
		sh := s.shards[s.shardOf(&ds[i].ID)]
		parts[sh] = append(parts[sh], ds[i])
	}
	return s.onShards(ctx, func(sh *shard, _ time.Time) {
		for i := range parts[sh] {
			sh.adopt(ctx, &parts[sh][i])
		}
	})
}

// adopt installs d, a decision made on another node.
func (sh *shard) adopt(ctx context.Context, d *KeptDecision) {
	if !sh.s.owns(&d.ID) {
		sh.s.putAsideDecisions([]KeptDecision{*d})
		return
	}
	dd := *d
	sh.cache.addKept(d.ID, &dd)
	b := sh.traces.get(&d.ID)
	if b == nil {
		return
	}
	// Spans that reached this node after the ring change and before the
	// decision: they follow it, as late spans.
	sh.traces.remove(b)
	sh.release(b)
	spans := sh.spansOf(b, make([]Span, 0, b.n))
	ownSpans(spans, &d.ID)
	sh.dropSpans(b)
	sh.s.m.lateSpans.WithLabelValues("keep").Add(float64(len(spans)))
	k := dd.kept()
	k.Late = true
	k.Spans = spans
	sh.emit(ctx, &k)
}

// moveDecisions sets aside the kept decisions for traces this node no
// longer owns, once per ownership change. It runs on the shard goroutine.
func (sh *shard) moveDecisions() {
	box := sh.s.owner.Load()
	if box == sh.ownerSeen {
		return
	}
	sh.ownerSeen = box
	if box == nil {
		return
	}
	var out []KeptDecision
	for k, d := range sh.cache.kept {
		if !box.mine(&d.ID) {
			delete(sh.cache.kept, k)
			out = append(out, *d)
		}
	}
	// The keys stay in the FIFO; evicting one later deletes nothing, or a
	// decision adopted again since, which is then forgotten early.
	sh.s.putAsideDecisions(out)
}

// The encoding of a list of kept decisions, for sending to a peer:
//
//	byte    'K'
//	byte    version (1)
//	uvarint count
//	count × decision:
//	  [16]byte trace ID
//	  uint64   sample rate, IEEE 754 bits, big endian
//	  string   reason
//	  varint   decided at, Unix nanoseconds (0: unknown)
//	  string   root service
//	  string   root name
//	  varint   start, Unix nanoseconds
//	  varint   duration, nanoseconds
//	  uvarint  span count
//	  byte     flags: 1 = has error
//
// where a string is a uvarint length and its bytes.
const (
	decisionsMagic   = 'K'
	decisionsVersion = 1
	// minDecisionLen is the smallest encoded decision: it bounds the count
	// a payload can claim before anything is allocated.
	minDecisionLen = 16 + 8 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1
)

// AppendDecisions appends the encoding of ds to dst.
func AppendDecisions(dst []byte, ds []KeptDecision) []byte {
	dst = append(dst, decisionsMagic, decisionsVersion)
	dst = binary.AppendUvarint(dst, uint64(len(ds)))
	str := func(b []byte, s string) []byte {
		return append(binary.AppendUvarint(b, uint64(len(s))), s...)
	}
	for i := range ds {
		d := &ds[i]
		dst = append(dst, d.ID[:]...)
		dst = binary.BigEndian.AppendUint64(dst, math.Float64bits(d.SampleRate))
		dst = str(dst, d.Reason)
		var at int64
		if !d.DecidedAt.IsZero() {
			at = d.DecidedAt.UnixNano()
		}
		dst = binary.AppendVarint(dst, at)
		dst = str(dst, d.RootService)
		dst = str(dst, d.RootName)
		dst = binary.AppendVarint(dst, d.Start)
		dst = binary.AppendVarint(dst, d.DurationNs)
		dst = binary.AppendUvarint(dst, uint64(d.SpanCount))
		var flags byte
		if d.HasError {
			flags |= 1
		}
		dst = append(dst, flags)
	}
	return dst
}

// errDecisions reports a payload that is not a valid list of decisions.
var errDecisions = errors.New("sampler: malformed kept decisions")

// DecodeDecisions decodes what AppendDecisions wrote. Malformed input, of
// any content, is an error.
func DecodeDecisions(b []byte) ([]KeptDecision, error) {
	if len(b) < 2 || b[0] != decisionsMagic {
		return nil, errDecisions
	}
	if b[1] != decisionsVersion {
		return nil, fmt.Errorf("%w: version %d, this node reads %d", errDecisions, b[1], decisionsVersion)
	}
	r := decReader{b: b[2:]}
	n := r.uvarint()
	if r.bad || n > uint64(len(r.b)/minDecisionLen) {
		return nil, fmt.Errorf("%w: count %d for %d bytes", errDecisions, n, len(r.b))
	}
	ds := make([]KeptDecision, n)
	for i := range ds {
		d := &ds[i]
		copy(d.ID[:], r.bytes(16))
		if r.bad {
			break
		}
		d.SampleRate = math.Float64frombits(binary.BigEndian.Uint64(r.bytes(8)))
		d.Reason = r.string()
		if at := r.varint(); at != 0 {
			d.DecidedAt = time.Unix(0, at)
		}
		d.RootService = r.string()
		d.RootName = r.string()
		d.Start = r.varint()
		d.DurationNs = r.varint()
		c := r.uvarint()
		if c > math.MaxInt32 {
			r.bad = true
		}
		d.SpanCount = int(c)
		f := r.bytes(1)
		if r.bad {
			break
		}
		if f[0] > 1 || math.IsNaN(d.SampleRate) || math.IsInf(d.SampleRate, 0) || d.SampleRate < 0 {
			r.bad = true
			break
		}
		d.HasError = f[0] == 1
	}
	if r.bad || len(r.b) != 0 {
		return nil, errDecisions
	}
	return ds, nil
}

// decReader reads the decision encoding; the first error sets bad and
// every later read returns zero values.
type decReader struct {
	b   []byte
	bad bool
}

var zeros [16]byte

func (r *decReader) bytes(n int) []byte {
	if r.bad || len(r.b) < n {
		r.bad = true
		return zeros[:n]
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *decReader) uvarint() uint64 { return readVarint(r, binary.Uvarint) }
func (r *decReader) varint() int64   { return readVarint(r, binary.Varint) }

func readVarint[T int64 | uint64](r *decReader, read func([]byte) (T, int)) T {
	if r.bad {
		return 0
	}
	v, k := read(r.b)
	if k <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[k:]
	return v
}

func (r *decReader) string() string {
	n := r.uvarint()
	if r.bad || n > uint64(len(r.b)) {
		r.bad = true
		return ""
	}
	return string(r.bytes(int(n)))
}
