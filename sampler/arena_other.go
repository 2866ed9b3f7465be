//go:build !linux

package sampler

// reserveArena maps span chunks on Linux only; elsewhere they live on the
// garbage-collected heap.
func reserveArena(int) []byte { return nil }

func releaseArena([]byte) {}

func unmapArena([]byte) {}
