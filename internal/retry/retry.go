// Package retry holds the waiting shared by the module's retry loops: one
// context-aware sleep and one exponential backoff policy.
//
// The consumer and the relay wait out outages of Postgres and Kafka; they
// never give up on them, so the backoff built here never stops (its
// MaxElapsedTime is 0, where backoff/v4's default would stop after 15
// minutes). An ExponentialBackOff is not safe for concurrent use: give each
// loop its own.
package retry

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Sleep waits for d or until ctx ends, and reports whether it waited the
// whole time: false means ctx ended, and the caller should return. With ctx
// already ended it returns false at once, even for d ≤ 0.
func Sleep(ctx context.Context, d time.Duration) bool {
	if ctx.Err() != nil {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// NewBackoff returns an exponential backoff whose intervals grow from
// initial to at most maxInterval, each randomised by backoff/v4's default
// ±50%, and which never stops: NextBackOff never returns backoff.Stop. Call
// Reset after a success to start again from initial.
func NewBackoff(initial, maxInterval time.Duration) *backoff.ExponentialBackOff {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = initial
	bo.MaxInterval = maxInterval
	bo.MaxElapsedTime = 0 // outages are waited out, never given up on
	bo.Reset()
	return bo
}
