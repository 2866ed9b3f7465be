package hugepage

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"
	"unsafe"
)

// first is BackHeap's one action and its result.
var first struct {
	once   sync.Once
	marked int64
	err    error
}

// BackHeap marks up to size bytes of fresh heap address space for huge
// pages, as the package comment describes, and returns how many bytes it
// marked; with 0 it returns why nothing was done. It acts once per
// process; later calls return the first call's result. Call it early, while
// the heap is small, and not with a memory limit (GOMEMLIMIT) below twice
// size, which it declines.
func BackHeap(size int64) (int64, error) {
	first.once.Do(func() { first.marked, first.err = backHeap(size) })
	return first.marked, first.err
}

func backHeap(size int64) (int64, error) {
	if size <= 0 {
		return 0, nil
	}
	enabled, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil {
		return 0, fmt.Errorf("transparent huge pages unavailable: %w", err)
	}
	if err := checkMode(string(enabled)); err != nil {
		return 0, err
	}
	overcommit, _ := os.ReadFile("/proc/sys/vm/overcommit_memory")
	if size, err = limit(size, memTotal(), string(overcommit)); err != nil {
		return 0, err
	}
	if lim := debug.SetMemoryLimit(-1); lim != math.MaxInt64 && lim < 2*size {
		return 0, fmt.Errorf("the Go memory limit (%d bytes) is below twice the size", lim)
	}
	// A fresh large allocation is zero already: the runtime neither clears
	// nor touches it, so none of it becomes resident here.
	b := make([]byte, size)
	// Mark the whole 2 MiB pages within it, as the span arenas are marked.
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	beg := int((p+Size-1)&^(Size-1) - p)
	end := int((p+uintptr(size))&^(Size-1) - p)
	if err := syscall.Madvise(b[beg:end], syscall.MADV_HUGEPAGE); err != nil {
		return 0, fmt.Errorf("madvise: %w", err)
	}
	// Free it now (b is dead past the madvise), while the rest of the heap
	// is small, so that the next allocations take its pages.
	runtime.GC()
	return int64(end - beg), nil
}
