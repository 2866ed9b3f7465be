package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// sizeUnits are the suffixes every size takes, in the file, the environment
// and on every command's flags: SI units as storage is billed, IEC units as
// memory is counted. The longest suffixes come first so that "MiB" is not
// read as "B".
var sizeUnits = []struct {
	suffix string
	mult   float64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

// sizeSyntax is how parse errors describe a size.
const sizeSyntax = "a whole number, optionally with a unit: kB MB GB TB (powers of 1000) or KiB MiB GiB TiB (powers of 1024), e.g. 4GB or 512MiB"

// parseSize reads a size: a number with an optional unit from sizeUnits
// ("4GB", "1.5GiB", "200_000"). Without a unit the number must be whole.
func parseSize(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), 0.0
	for _, u := range sizeUnits {
		if v, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(v), u.mult
			break
		}
	}
	num = strings.ReplaceAll(num, "_", "")
	if mult == 0 {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("must be %s; got %q", sizeSyntax, s)
		}
		return n, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || f*mult >= 1<<63 {
		return 0, fmt.Errorf("must be %s; got %q", sizeSyntax, s)
	}
	return int64(f * mult), nil
}

// formatSize writes n as it would be written: in the unit that divides it
// exactly with the fewest digits, IEC on a tie (64MiB, 64MB, not 67108864
// or 62500KiB).
func formatSize(n int64) string {
	plain := strconv.FormatInt(n, 10)
	best := plain
	if n == 0 {
		return best
	}
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"kB", 1e3}} {
		s := strconv.FormatInt(n/u.mult, 10) + u.suffix
		if n%u.mult == 0 && len(s) <= len(plain) && (best == plain || len(s) < len(best)) {
			best = s
		}
	}
	return best
}

// durationSyntax is how parse errors describe a duration.
const durationSyntax = "a duration like 500ms, 3s, 1m, 36h or 30d (d: days of 24h)"

// parseDuration reads a Go duration, which may start with whole or
// fractional days: "30d", "1d12h", "90m". Negative durations are refused;
// no setting means anything by them.
func parseDuration(s string) (time.Duration, error) {
	rest := strings.TrimSpace(s)
	var days time.Duration
	if i := strings.IndexByte(rest, 'd'); i > 0 {
		n, err := strconv.ParseFloat(rest[:i], 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("must be %s; got %q", durationSyntax, s)
		}
		days, rest = time.Duration(n*float64(24*time.Hour)), rest[i+1:]
		if rest == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(rest)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("must be %s; got %q", durationSyntax, s)
	}
	return days + d, nil
}

// formatDuration writes d as a person would: 30s, 5m, 1h30m, 2d.
func formatDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	if d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// parsedFlag is a flag whose text parse turns into a T when it is set. It
// keeps the text as written, so messages echo "30d" rather than
// "720h0m0s".
type parsedFlag[T any] struct {
	v     T
	text  string
	parse func(string) (T, error)
}

func (f *parsedFlag[T]) Set(s string) error {
	v, err := f.parse(s)
	if err != nil {
		return err
	}
	f.v, f.text = v, s
	return nil
}

func (f *parsedFlag[T]) String() string { return f.text }

// defineFlag defines a flag parsed by parse on fs; def is in the flag's
// syntax.
func defineFlag[T any](fs *flag.FlagSet, name, def, usage string, parse func(string) (T, error)) *parsedFlag[T] {
	f := &parsedFlag[T]{parse: parse}
	if def != "" {
		if err := f.Set(def); err != nil {
			panic("BUG: default of --" + name + ": " + err.Error())
		}
	}
	fs.Var(f, name, usage)
	return f
}

// durationFlag defines a flag taking parseDuration's syntax.
func durationFlag(fs *flag.FlagSet, name, def, usage string) *parsedFlag[time.Duration] {
	return defineFlag(fs, name, def, usage, parseDuration)
}

// sizeFlag defines a flag taking parseSize's syntax.
func sizeFlag(fs *flag.FlagSet, name, def, usage string) *parsedFlag[int64] {
	return defineFlag(fs, name, def, usage, parseSize)
}
