//go:build !linux

package main

// useMadvFree is Linux only (see madvise_linux.go).
func useMadvFree() {}
