package hugepage

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// TestBackHeapServesNextAllocations checks the outcome that matters: after
// BackHeap, a fresh heap allocation lies in a range marked for huge pages
// and, once touched, is backed by them.
func TestBackHeapServesNextAllocations(t *testing.T) {
	enabled, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil {
		t.Skipf("no transparent huge pages: %v", err)
	}
	if err := checkMode(string(enabled)); err != nil {
		t.Skipf("BackHeap has nothing to do here: %v", err)
	}
	marked, err := BackHeap(64 << 20)
	if err != nil || marked < 60<<20 {
		t.Fatalf("BackHeap(64MiB) = %d, %v", marked, err)
	}
	if again, err := BackHeap(128 << 20); again != marked || err != nil {
		t.Fatalf("second BackHeap = %d, %v; want the first result %d", again, err, marked)
	}

	buf := make([]byte, 16<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	// The marked range starts at the first 2 MiB boundary of the stretch;
	// the middle of the buffer lies past it.
	addr := uint64(uintptr(unsafe.Pointer(&buf[len(buf)/2])))
	flags, huge := vmaOf(t, addr)
	if !strings.Contains(" "+flags+" ", " hg ") {
		t.Fatalf("the allocation at %#x is in a range without the hg flag (VmFlags: %s)", addr, flags)
	}
	if huge == 0 {
		t.Fatalf("the allocation at %#x is in a marked range with no huge pages backing it", addr)
	}
	t.Logf("allocation at %#x: range flags %q, %d KiB in huge pages", addr, flags, huge)
}

// vmaOf returns the VmFlags and AnonHugePages (KiB) of the mapping of
// this process that holds addr.
func vmaOf(t *testing.T, addr uint64) (flags string, hugeKiB int) {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(fields[0], "-"); ok && !strings.HasSuffix(fields[0], ":") {
			a, err1 := strconv.ParseUint(lo, 16, 64)
			b, err2 := strconv.ParseUint(hi, 16, 64)
			if in {
				break
			}
			in = err1 == nil && err2 == nil && a <= addr && addr < b
			continue
		}
		if !in {
			continue
		}
		switch fields[0] {
		case "AnonHugePages:":
			hugeKiB, _ = strconv.Atoi(fields[1])
		case "VmFlags:":
			flags = strings.Join(fields[1:], " ")
		}
	}
	if flags == "" {
		t.Fatalf("no mapping holds %#x", addr)
	}
	return flags, hugeKiB
}
