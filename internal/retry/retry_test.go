package retry

import (
	"context"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
)

func TestSleepWaitsTheWholeDuration(t *testing.T) {
	t.Parallel()
	start := time.Now()
	if !Sleep(context.Background(), 20*time.Millisecond) {
		t.Fatal("Sleep returned false without a cancelled context")
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("Sleep returned after %v, want at least 20ms", d)
	}
}

func TestSleepEndsWithItsContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan bool)
	go func() { done <- Sleep(ctx, time.Hour) }()
	cancel()
	select {
	case slept := <-done:
		if slept {
			t.Fatal("Sleep reported a whole hour slept after its context was cancelled")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Sleep did not return after its context was cancelled")
	}
}

func TestSleepWithEndedContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, d := range []time.Duration{-time.Second, 0, time.Hour} {
		if Sleep(ctx, d) {
			t.Errorf("Sleep(ended context, %v) = true, want false", d)
		}
	}
	if !Sleep(context.Background(), 0) {
		t.Error("Sleep(live context, 0) = false, want true")
	}
}

func TestNewBackoff(t *testing.T) {
	t.Parallel()
	const initial, maxInterval = 100 * time.Millisecond, 2 * time.Second
	bo := NewBackoff(initial, maxInterval)
	if bo.MaxElapsedTime != 0 {
		t.Fatalf("MaxElapsedTime = %v, want 0 (never give up)", bo.MaxElapsedTime)
	}
	// backoff/v4 randomises each interval by RandomizationFactor (0.5).
	lo, hi := func(d time.Duration) time.Duration { return d / 2 }, func(d time.Duration) time.Duration { return d * 3 / 2 }
	if d := bo.NextBackOff(); d < lo(initial) || d > hi(initial) {
		t.Fatalf("first interval %v, want %v±50%%", d, initial)
	}
	var last time.Duration
	for range 100 {
		last = bo.NextBackOff()
		if last == backoff.Stop {
			t.Fatal("NextBackOff returned Stop")
		}
		if last > hi(maxInterval) {
			t.Fatalf("interval %v exceeds maxInterval %v+50%%", last, maxInterval)
		}
	}
	if last < lo(maxInterval) {
		t.Fatalf("interval after 100 failures %v, want about maxInterval %v", last, maxInterval)
	}
	bo.Reset()
	if d := bo.NextBackOff(); d < lo(initial) || d > hi(initial) {
		t.Fatalf("interval after Reset %v, want %v±50%%", d, initial)
	}
}
