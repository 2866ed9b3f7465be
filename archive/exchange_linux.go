package archive

import "golang.org/x/sys/unix"

// exchangeDirs swaps two directories in one atomic step, so a reader sees
// either every old file of a partition or every new one.
func exchangeDirs(a, b string) error {
	return unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
}
