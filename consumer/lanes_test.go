package consumer

import (
	"testing"
	"time"
)

// TestLanesAdapt: while a lane's time per message holds, lanes are added up
// to the maximum; when it grows (lanes only queue for the same resources),
// they are taken away again; when none ends for long, one more may start.
func TestLanesAdapt(t *testing.T) {
	l := lanes{limit: 1, max: 8, last: time.Now()}
	for range 20 {
		l.observe(50*time.Millisecond, 50) // 1ms per message: waiting on something else
	}
	if got := l.allowed(); got != 8 {
		t.Fatalf("flat latency: %d lanes, want the maximum 8", got)
	}
	for range 20 {
		l.observe(200*time.Millisecond, 50) // 4ms: queueing
	}
	if got := l.allowed(); got != 1 {
		t.Fatalf("latency 4× the best: %d lanes, want 1", got)
	}
	now := l.last.Add(time.Second)
	if !l.stalled(now) {
		t.Fatalf("no lane ended for 1s (usual lane %v): not stalled", l.typical)
	}
	l.grow(now)
	if got := l.allowed(); got != 2 || l.stalled(now) {
		t.Fatalf("after a stall: %d lanes, stalled %v; want 2, not stalled", got, l.stalled(now))
	}
}

func TestKeyBackoff(t *testing.T) {
	cfg := &Config{RetryInitial: 100 * time.Millisecond, RetryMax: time.Second}
	for attempts, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 60: time.Second} {
		if got := keyBackoff(cfg, attempts); got != want {
			t.Errorf("attempt %d: %v, want %v", attempts, got, want)
		}
	}
}
