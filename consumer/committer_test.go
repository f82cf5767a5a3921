package consumer

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.opentelemetry.io/otel/metric/noop"
)

// TestCommitterRetriesFailedCommit: a failed offset commit is kept and sent
// again, even when no later batch adds an offset (an idle partition).
func TestCommitterRetriesFailedCommit(t *testing.T) {
	t.Parallel()
	var (
		mu    sync.Mutex
		calls []map[string]map[int]int64
	)
	done := make(chan struct{})
	commit := func(offsets map[string]map[int]int64) error {
		mu.Lock()
		defer mu.Unlock()
		cp := map[string]map[int]int64{}
		for topic, parts := range offsets {
			cp[topic] = maps.Clone(parts)
		}
		calls = append(calls, cp)
		switch len(calls) {
		case 1:
			return errors.New("coordinator not available")
		case 2:
			close(done)
		}
		return nil
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.MaxElapsedTime = time.Millisecond, 10*time.Millisecond, 0
	bo.Reset()
	errs, _ := noop.NewMeterProvider().Meter("test").Int64Counter("errors")
	c := newCommitter(commit, bo, slog.New(slog.DiscardHandler), errs, nil)
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan struct{})
	go func() {
		c.run(ctx)
		close(ended)
	}()
	c.add("t", 0, 10)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the failed commit was never retried")
	}
	cancel()
	<-ended
	mu.Lock()
	defer mu.Unlock()
	if got := calls[1]["t"][0]; got != 10 {
		t.Fatalf("retry committed %v, want offset 10 of t/0", calls[1])
	}
}

// TestCommitterKeepsHighestOffset: offsets added while a failed commit
// waits for its retry replace it only when they are higher.
func TestCommitterKeepsHighestOffset(t *testing.T) {
	t.Parallel()
	errs, _ := noop.NewMeterProvider().Meter("test").Int64Counter("errors")
	fail := true
	var got map[string]map[int]int64
	c := newCommitter(func(o map[string]map[int]int64) error {
		if fail {
			return errors.New("down")
		}
		got = o
		return nil
	}, backoff.NewExponentialBackOff(), slog.New(slog.DiscardHandler), errs, nil)
	c.merge(map[string]map[int]int64{"t": {0: 10, 1: 5}})
	if c.flush() {
		t.Fatal("flush reported success for a failed commit")
	}
	c.merge(map[string]map[int]int64{"t": {0: 7, 1: 8}, "u": {0: 1}})
	fail = false
	if !c.flush() {
		t.Fatal("flush failed")
	}
	want := map[string]map[int]int64{"t": {0: 10, 1: 8}, "u": {0: 1}}
	for topic, parts := range want {
		if !maps.Equal(got[topic], parts) {
			t.Fatalf("committed %v, want %v", got, want)
		}
	}
}
