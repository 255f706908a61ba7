package framework

import (
	"testing"
	"time"
)

// eventuallyInterval is how long Eventually waits between two checks.
const eventuallyInterval = 50 * time.Millisecond

// Eventually calls cond until it returns true with a nil error, at once and
// then every 50ms, and fails the test if that has not happened within
// timeout or when the test's context ends. An error from cond does not stop
// the wait: it means "not yet", and the last one is reported on failure, so
// cond can say what it is still waiting for.
func Eventually(t testing.TB, timeout time.Duration, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var last error
	for {
		select {
		case <-t.Context().Done():
			t.Fatalf("condition not met before the test ended (last error: %v)", last)
		case <-timer.C:
		}
		ok, err := cond()
		if ok && err == nil {
			return
		}
		last = err
		if !time.Now().Before(deadline) {
			t.Fatalf("condition not met within %s (last error: %v)", timeout, last)
		}
		timer.Reset(eventuallyInterval)
	}
}
