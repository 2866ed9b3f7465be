package sampler

import "syscall"

// reserveArena maps size bytes of anonymous memory for span chunks. Pages
// are backed on first touch; MAP_NORESERVE leaves the size as an upper
// bound rather than a commitment. It returns nil when the mapping fails.
func reserveArena(size int) []byte {
	if size <= 0 {
		return nil
	}
	mem, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS|syscall.MAP_NORESERVE)
	if err != nil {
		return nil
	}
	// Huge pages, where the system grants them on request, cut the
	// page faults of filling fresh chunks by a factor of 512.
	_ = syscall.Madvise(mem, syscall.MADV_HUGEPAGE)
	return mem
}

// releaseArena returns the pages of an unused chunk to the system; they
// read as zeros when touched again.
func releaseArena(b []byte) { _ = syscall.Madvise(b, syscall.MADV_DONTNEED) }

func unmapArena(b []byte) { _ = syscall.Munmap(b) }
