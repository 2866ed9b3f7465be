//go:build !linux

package hugepage

import "errors"

// BackHeap does nothing off Linux: other kernels offer no huge pages on
// request to ordinary processes.
func BackHeap(size int64) (int64, error) {
	if size <= 0 {
		return 0, nil
	}
	return 0, errors.New("huge pages on request are a Linux feature")
}
