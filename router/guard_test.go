package router

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// TestGuard runs the guard through successive runs of a node over one
// partition that resumes at offset 10, each run reading up to the record
// it dies on (-1: it ends cleanly after reading to 20), and checks what
// each run does: read carefully, skip a record.
func TestGuard(t *testing.T) {
	type run struct {
		at          int64 // the resume record's timestamp
		diesOn      int64
		wantCareful bool
		wantSkip    int64 // -1: none
	}
	f := func(name string, runs []run) {
		t.Helper()
		dir := t.TempDir()
		for i, r := range runs {
			g, err := newGuard(dir, "spans", "g", slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			skipped := int64(-1)
			careful := false
			for o := int64(10); o <= 20; o++ {
				skip, c := g.before(0, o, r.at)
				careful = careful || c
				if skip {
					skipped = o
					continue
				}
				if o == r.diesOn {
					break
				}
			}
			if careful != r.wantCareful || skipped != r.wantSkip {
				t.Errorf("%s, run %d: careful %v, skipped %d; want %v, %d", name, i+1, careful, skipped, r.wantCareful, r.wantSkip)
			}
			if r.diesOn < 0 {
				if err := g.close(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	f("poison record", []run{{1, 15, false, -1}, {1, 15, true, -1}, {1, 15, true, -1}, {1, -1, true, 15}, {1, -1, false, 15}})
	f("clean runs", []run{{1, -1, false, -1}, {1, -1, false, -1}})
	f("kills at other records", []run{{1, 15, false, -1}, {1, 12, true, -1}, {1, 17, true, -1}, {1, 13, true, -1}, {1, -1, true, -1}})
	f("another topic under the same names", []run{{1, 15, false, -1}, {2, 15, false, -1}, {3, -1, false, -1}})
}

// BenchmarkRecordChecks is what the wall watch and the guard cost each
// record: in normal reading, and reading carefully (a synced state file
// write per record).
func BenchmarkRecordChecks(b *testing.B) {
	value := []byte{0x0a, 1, 0}
	for _, careful := range []bool{false, true} {
		b.Run(map[bool]string{false: "normal", true: "careful"}[careful], func(b *testing.B) {
			g, err := newGuard(b.TempDir(), "spans", "g", slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			g.careful[0] = careful
			w := newWalls(EncodingProto)
			b.ReportAllocs()
			for i := range b.N {
				if w.isStopped(0) {
					b.Fatal("stopped")
				}
				g.before(0, int64(i), 1)
				w.note(0, int64(i), value, false)
			}
		})
	}
}

// TestGuardOffWithoutItsFile gives the consumer a state directory that
// cannot exist: it consumes without the guard rather than not at all.
func TestGuardOffWithoutItsFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Brokers: []string{"127.0.0.1:1"}, Topic: "spans", Group: "g", StateDir: filepath.Join(file, "state")}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c, err := NewConsumer(cfg, nopDispatcher{}, nil)
	if err != nil {
		t.Fatalf("NewConsumer: %v", err)
	}
	defer c.Client().Close()
	if c.guard != nil {
		t.Fatal("a guard without a state file")
	}
}
