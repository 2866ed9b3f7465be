package logthrottle

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestHandler(t *testing.T) {
	var buf bytes.Buffer
	h := New(slog.NewJSONHandler(&buf, nil), time.Minute, 3)
	now := time.Unix(1_700_000_000, 0)
	h.st.now = func() time.Time { return now }
	log := slog.New(h)
	peer := log.With("component", "cluster") // shares the windows

	for i := range 100 {
		log.Warn("fetch failed; retrying", "i", i)
		peer.Error("forwarding failed", "i", i)
		log.Info("progress", "i", i) // never throttled
	}
	now = now.Add(time.Minute)
	log.Warn("fetch failed; retrying", "i", 100)

	count := map[string]int{}
	var suppressed []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatal(err)
		}
		msg := rec["msg"].(string)
		count[msg]++
		if msg == "log lines suppressed" {
			suppressed = append(suppressed, rec)
		}
	}
	want := map[string]int{"fetch failed; retrying": 4, "forwarding failed": 3, "progress": 100, "log lines suppressed": 1}
	for msg, n := range want {
		if count[msg] != n {
			t.Errorf("%q written %d times, want %d (all: %v)", msg, count[msg], n, count)
		}
	}
	if len(suppressed) == 1 && (suppressed[0]["message"] != "fetch failed; retrying" || suppressed[0]["count"] != float64(97)) {
		t.Errorf("suppression line %v, want 97 of \"fetch failed; retrying\"", suppressed[0])
	}
}
