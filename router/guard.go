package router

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

	"github.com/tailsift/tailsift/sampler"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The poison-record guard keeps a record that crashes the node from
// crashing it forever. Such a record is never committed, so a restarted
// node reads it again first thing and dies again: the partition stalls on
// it. The guard notes, in a small state file, where each partition resumed
// and whether the run ended cleanly. After an unclean end at the same
// resume offset (the same record: its timestamp tells another topic or
// cluster under the same names apart), the next run reads that partition
// carefully: before each
// record it writes (and syncs) "now processing offset X", and hands the
// record's spans on alone. If the node dies again, the file names the
// record being processed. Named by two such deaths in a row, the record is
// skipped, counted, logged by partition and offset (never its bytes) and
// copied to the dead-letter topic when one is set.
//
// A death the record did not cause (an OOM kill, an operator's kill -9)
// names whatever record was being read then; requiring the same record
// twice keeps such deaths from costing a good record. Careful reading ends
// once the partition commits past where it resumed; until then it costs a
// file sync per record. Outside it, the guard writes its file once per run
// and partition.
//
// It catches a record that crashes the node while it is scanned or handed
// to the sampler; a crash later on (deciding, archiving) is not tied to one
// record, and is left to the operator.
const carefulAfter = 1 // unclean ends at one resume offset before careful reading

// guardState is the state file.
type guardState struct {
	Clean bool                    `json:"clean"` // the run that wrote it ended cleanly
	Parts map[string]*guardPartSt `json:"partitions"`
}

// guardPartSt is one partition's state.
type guardPartSt struct {
	Resume  int64   `json:"resume"`            // first offset the run read
	At      int64   `json:"at"`                // its record's timestamp (unix ms): another topic or cluster under the same names differs
	Crashes int     `json:"crashes"`           // unclean ends in a row at Resume
	Reading *int64  `json:"reading,omitempty"` // careful: the record being processed
	Suspect *int64  `json:"suspect,omitempty"` // named once by a careful run's death
	Skip    []int64 `json:"skip,omitempty"`    // records named twice: skipped
}

// guard is the poison-record guard of one consumer. Its methods are
// called from the poll loop, and forget from rebalance callbacks.
type guard struct {
	file    string
	log     *slog.Logger
	mu      sync.Mutex
	prev    guardState
	cur     guardState
	parts   map[int32]*guardPartSt // cur.Parts of the partitions read in this run
	careful map[int32]bool
}

// newGuard reads the state the previous run left in dir and marks this run
// unclean until close. An empty dir disables the guard (nil), as does an
// error (returned).
func newGuard(dir, topic, group string, log *slog.Logger) (*guard, error) {
	if dir == "" {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("router: poison-record guard: %w", err)
	}
	g := &guard{file: filepath.Join(dir, "consumer-"+url.PathEscape(group)+"-"+url.PathEscape(topic)+".json"),
		log: log, parts: map[int32]*guardPartSt{}, careful: map[int32]bool{}}
	b, err := os.ReadFile(g.file)
	switch {
	case errors.Is(err, os.ErrNotExist):
		g.prev.Clean = true
	case err != nil:
		return nil, fmt.Errorf("router: poison-record guard: %w", err)
	default:
		if err := json.Unmarshal(b, &g.prev); err != nil {
			log.Warn("poison-record guard: unreadable state file; starting afresh", "file", g.file, "err", err)
			g.prev = guardState{Clean: true}
		}
	}
	// Partitions this run does not get keep what the last run knew.
	g.cur.Parts = map[string]*guardPartSt{}
	for k, v := range g.prev.Parts {
		c := *v
		c.Reading = nil
		g.cur.Parts[k] = &c
	}
	if err := g.write(false); err != nil {
		return nil, fmt.Errorf("router: poison-record guard: %w", err)
	}
	return g, nil
}

// before is called before the record at offset of partition p is
// scanned. It says whether to skip the record (it crashed the node twice)
// and whether to hand its spans on alone; reading carefully, it first
// notes durably that the record is being processed.
func (g *guard) before(p int32, offset, at int64) (skip, careful bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.parts[p]
	if st == nil {
		st = g.first(p, offset, at)
	}
	if len(st.Skip) > 0 && slices.Contains(st.Skip, offset) {
		return true, false
	}
	if !g.careful[p] {
		return false, false
	}
	reading := offset
	st.Reading = &reading
	if err := g.write(true); err != nil {
		g.log.Warn("poison-record guard: cannot write its state", "err", err)
	}
	return false, true
}

// first starts this run's watch of partition p at offset, its first record,
// written at at.
func (g *guard) first(p int32, offset, at int64) *guardPartSt {
	key := strconv.Itoa(int(p))
	st := &guardPartSt{Resume: offset, At: at}
	if old := g.prev.Parts[key]; old != nil && old.At == at {
		for _, o := range old.Skip {
			if o >= offset {
				st.Skip = append(st.Skip, o)
			}
		}
		if !g.prev.Clean && old.Resume == offset {
			st.Crashes = old.Crashes + 1
			if r := old.Reading; r != nil {
				if old.Suspect != nil && *old.Suspect == *r {
					st.Skip = append(st.Skip, *r)
					g.log.Error("a record crashed the node twice while being read; skipping it", "partition", p, "offset", *r)
				} else {
					st.Suspect = r
				}
			}
		}
	}
	if st.Crashes >= carefulAfter {
		g.careful[p] = true
		g.log.Warn("the node ended uncleanly at this partition's resume offset; reading it record by record until it commits past it",
			"partition", p, "offset", offset, "unclean_ends", st.Crashes)
	}
	g.cur.Parts[key] = st
	g.parts[p] = st
	if err := g.write(false); err != nil {
		g.log.Warn("poison-record guard: cannot write its state", "err", err)
	}
	return st
}

// committed ends careful reading of each partition whose commit passed
// where it resumed: a death from now on resumes elsewhere.
func (g *guard) committed(committed func(int32) int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for p := range g.careful {
		st := g.parts[p]
		if c := committed(p); c > st.Resume {
			delete(g.careful, p)
			st.Reading, st.Suspect, st.Crashes = nil, nil, 0
			g.log.Info("partition committed past where the node ended uncleanly; reading it as usual again", "partition", p, "committed", c)
			if err := g.write(false); err != nil {
				g.log.Warn("poison-record guard: cannot write its state", "err", err)
			}
		}
	}
}

// forget ends this run's watch of partitions read elsewhere now.
func (g *guard) forget(parts []int32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range parts {
		if st := g.parts[p]; st != nil {
			st.Reading = nil
		}
		delete(g.parts, p)
		delete(g.careful, p)
	}
}

// close records that the run ended cleanly.
func (g *guard) close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cur.Clean = true
	for _, st := range g.cur.Parts {
		st.Reading = nil
	}
	return g.write(false)
}

// write replaces the state file; sync makes it durable first (careful
// reading: the next run must find the record named even after a machine
// crash). A process that dies keeps what it wrote without sync.
func (g *guard) write(sync bool) error {
	b, err := json.Marshal(&g.cur)
	if err != nil {
		return err
	}
	tmp := g.file + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if sync && err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, g.file)
}

// guardSkips runs the guard before r is scanned: it reports whether r is
// to be skipped (and then counts, logs and dead-letters it), and sets
// c.alone when r is read carefully.
func (c *Consumer) guardSkips(r *kgo.Record, p *sampler.Pending) bool {
	c.alone = false
	if c.guard == nil {
		return false
	}
	skip, careful := c.guard.before(r.Partition, r.Offset, r.Timestamp.UnixMilli())
	c.alone = careful
	if !skip {
		return false
	}
	c.m.poison.Inc()
	c.cfg.Logger.Error("skipped a record that crashed the node", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "bytes", len(r.Value))
	c.deadLetter(r, p, "poison", "the node crashed twice while reading it")
	return true
}

// guardCommitted ends careful reading where commits passed it.
func (c *Consumer) guardCommitted() {
	if c.guard != nil {
		c.guard.committed(c.track.committedOffset)
	}
}

// guardClose records a clean end.
func (c *Consumer) guardClose() {
	if c.guard == nil {
		return
	}
	if err := c.guard.close(); err != nil {
		c.cfg.Logger.Warn("poison-record guard: cannot record a clean end", "err", err)
	}
}
