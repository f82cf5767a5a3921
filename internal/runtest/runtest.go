// Package runtest runs a long-lived Run method (a consumer, a relay) in the
// background of a test.
package runtest

import (
	"context"
	"testing"
	"time"
)

// Background runs run until the test ends or the returned stop is called.
// stop cancels run's context, waits up to wait for it to return and fails
// the test, naming what, when it returns an error or does not return. stop
// may be called more than once.
func Background(tb testing.TB, what string, wait time.Duration, run func(context.Context) error) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("%s Run: %v", what, err)
			}
		case <-time.After(wait):
			tb.Errorf("%s Run did not return within %v of cancel", what, wait)
		}
	}
	tb.Cleanup(stop)
	return stop
}
