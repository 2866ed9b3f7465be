package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// samples is one scrape of a Prometheus text endpoint: the value of every
// series, keyed by the series as written ("name{labels}").
type samples map[string]float64

// sum adds the series of the metric name, over all label sets. A name
// matches with or without the suffixes exporters append (_total, and the
// Collector's unit suffixes), so the same call reads both processes.
func (s samples) sum(name string) float64 {
	return s.sumWhere(name, "")
}

// sumWhere is sum restricted to series whose labels contain label, e.g.
// `decision="keep"`.
func (s samples) sumWhere(name, label string) float64 {
	var t float64
	for series, v := range s {
		n, labels, _ := strings.Cut(series, "{")
		if n != name && n != name+"_total" {
			continue
		}
		if label != "" && !strings.Contains(labels, label) {
			continue
		}
		t += v
	}
	return t
}

// has reports whether any series of name was exported.
func (s samples) has(name string) bool {
	for series := range s {
		n, _, _ := strings.Cut(series, "{")
		if n == name || n == name+"_total" {
			return true
		}
	}
	return false
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// scrape reads url. Only what this program needs of the text format is
// parsed: comment lines are skipped, and a sample line is a series then a
// value, with an optional timestamp after it.
func scrape(ctx context.Context, url string) (samples, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	return parseProm(resp.Body)
}

func parseProm(r io.Reader) (samples, error) {
	s := samples{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		// Label values may hold spaces, so the series ends at the last
		// '}' when there is one.
		series, rest := line, ""
		if i := strings.LastIndexByte(line, '}'); i >= 0 {
			series, rest = line[:i+1], line[i+1:]
		} else if i := strings.IndexByte(line, ' '); i >= 0 {
			series, rest = line[:i], line[i:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("metrics: no value in %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: %q: %w", line, err)
		}
		if math.IsNaN(v) {
			continue
		}
		s[series] = v
	}
	return s, sc.Err()
}
