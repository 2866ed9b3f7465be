// Package logthrottle bounds log floods: a slog.Handler that passes at most
// a burst of warnings and errors with the same message per period, then one
// line saying how many it suppressed. A node that cannot reach a peer or a
// broker retries several times a second; its log should say so a few times
// a minute, and its metrics count every attempt.
package logthrottle

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// maxKeys bounds the messages tracked; past it the windows start afresh
// (messages are constants in practice, so this is a backstop).
const maxKeys = 1024

// Handler throttles records at slog.LevelWarn and above by message; lower
// levels pass untouched. Handlers derived with WithAttrs and WithGroup share
// the same windows.
type Handler struct {
	next slog.Handler
	st   *state
}

type state struct {
	period time.Duration
	burst  int
	now    func() time.Time

	mu      sync.Mutex
	windows map[string]*window
}

type window struct {
	start      time.Time
	n          int
	suppressed int
}

// New wraps next so that at most burst records with the same message are
// written per period.
func New(next slog.Handler, period time.Duration, burst int) *Handler {
	return &Handler{next: next, st: &state{period: period, burst: burst, now: time.Now, windows: make(map[string]*window)}}
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle implements slog.Handler.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return h.next.Handle(ctx, r)
	}
	st := h.st
	now := st.now()
	st.mu.Lock()
	w := st.windows[r.Message]
	var report int
	if w == nil || now.Sub(w.start) >= st.period {
		if w != nil {
			report = w.suppressed
		}
		if w == nil && len(st.windows) >= maxKeys {
			clear(st.windows)
		}
		w = &window{start: now}
		st.windows[r.Message] = w
	}
	w.n++
	pass := w.n <= st.burst
	if !pass {
		w.suppressed++
	}
	st.mu.Unlock()
	if report > 0 {
		s := slog.NewRecord(now, r.Level, "log lines suppressed", 0)
		s.AddAttrs(slog.String("message", r.Message), slog.Int("count", report), slog.Duration("period", st.period))
		if err := h.next.Handle(ctx, s); err != nil {
			return err
		}
	}
	if !pass {
		return nil
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &Handler{next: h.next.WithAttrs(as), st: h.st}
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), st: h.st}
}
