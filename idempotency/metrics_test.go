package idempotency_test

import (
	"context"
	"maps"
	"strings"
	"testing"

	"github.com/exactlyhq/exactly/idempotency"
	"github.com/exactlyhq/exactly/internal/metrictest"
)

// TestMetrics: requests are counted by outcome, and stored responses by
// size.
func TestMetrics(t *testing.T) {
	t.Parallel()
	mp := metrictest.NewProvider()
	b := setup(t, func(c *idempotency.Config) { c.MeterProvider = mp })
	b.post(t, "k-1", "alice", "tea")                    // first
	b.post(t, "k-1", "alice", "tea")                    // replayed
	b.post(t, "k-1", "alice", "coffee")                 // mismatch
	b.post(t, "", "alice", "tea")                       // missing_key
	b.post(t, strings.Repeat("k", 300), "alice", "tea") // invalid_key (too long)
	b.post(t, "k-3", "", "tea")                         // unauthenticated
	b.post(t, "k-4", "alice", "fail")                   // handler_error
	b.post(t, "k-5", "alice", "panic")                  // error
	for len(b.started) > 0 {
		<-b.started
	}
	b.release = make(chan struct{})
	done := make(chan struct{})
	go func() { b.post(t, "k-6", "alice", "tea"); close(done) }()
	<-b.started                      // the first k-6 holds its key
	b.post(t, "k-6", "alice", "tea") // in_flight
	close(b.release)
	<-done

	points, err := mp.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	var stored uint64
	var storedBytes int64
	for _, p := range points {
		switch p.Name {
		case idempotency.MetricRequests:
			o, _ := p.Attrs.Value("outcome")
			got[o.AsString()] += p.Int
		case idempotency.MetricStoredBytes:
			stored, storedBytes = p.Count, p.Int
		}
	}
	want := map[string]int64{"first": 2, "replayed": 1, "mismatch": 1, "missing_key": 1, "invalid_key": 1,
		"unauthenticated": 1, "handler_error": 1, "error": 1, "in_flight": 1}
	if !maps.Equal(got, want) {
		t.Errorf("requests by outcome %v, want %v", got, want)
	}
	if stored != 2 || storedBytes < int64(2*len(`{"status":201}`)) {
		t.Errorf("%d stored responses of %d bytes, want 2 of some bytes each", stored, storedBytes)
	}
}
