package sampler

import "time"

// Clock is where the sampler reads the time. Only Run reads it; every other
// method takes now as an argument, so tests drive time by hand.
type Clock interface{ Now() time.Time }

// SystemClock is the wall clock.
type SystemClock struct{}

// Now implements Clock.
func (SystemClock) Now() time.Time { return time.Now() }
