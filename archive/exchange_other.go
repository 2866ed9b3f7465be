//go:build !linux && !darwin

package archive

import (
	"fmt"
	"os"
)

// exchangeDirs swaps two directories with three renames. This platform has
// no atomic exchange, so between the first two a reader listing the
// partition finds it missing; it never finds it half old, half new.
func exchangeDirs(a, b string) error {
	tmp := b + ".exchange"
	if err := os.Rename(b, tmp); err != nil {
		return err
	}
	if err := os.Rename(a, b); err != nil {
		if rerr := os.Rename(tmp, b); rerr != nil {
			return fmt.Errorf("%w (and restoring %s: %v)", err, b, rerr)
		}
		return err
	}
	return os.Rename(tmp, a)
}
