package hugepage

import (
	"strings"
	"testing"
)

func TestCheckMode(t *testing.T) {
	for _, c := range []struct {
		text string
		ok   bool
		want string
	}{
		{"always [madvise] never\n", true, ""},
		{"[always] madvise never\n", false, "always"},
		{"always madvise [never]\n", false, "never"},
		{"always madvise never\n", false, "unrecognised"},
		{"", false, "unrecognised"},
	} {
		err := checkMode(c.text)
		if c.ok != (err == nil) || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("checkMode(%q) = %v, want ok=%v or an error naming %q", c.text, err, c.ok, c.want)
		}
	}
}

func TestLimit(t *testing.T) {
	for _, c := range []struct {
		size, mem  int64
		overcommit string
		want       int64
	}{
		{512 << 20, 24 << 30, "0\n", 512 << 20},
		{512 << 20, 1 << 30, "1", 256 << 20},   // a quarter of memory
		{(64 << 20) + 12345, 0, "0", 64 << 20}, // whole huge pages
		{512 << 20, 24 << 30, "2\n", 0},        // strict accounting: declined
		{3 << 20, 24 << 30, "0", 0},            // below two huge pages
	} {
		got, err := limit(c.size, c.mem, c.overcommit)
		if got != c.want || (err == nil) != (c.want > 0) {
			t.Errorf("limit(%d, %d, %q) = %d, %v; want %d", c.size, c.mem, c.overcommit, got, err, c.want)
		}
	}
}
