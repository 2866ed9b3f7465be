package main

import (
	"log/slog"
)

// durationsAsText writes durations as Go duration text ("1.5s", "5m0s")
// in every log format: slog's JSON handler would write them as integer
// nanoseconds, which a reader of the log cannot tell from a count.
func durationsAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}
