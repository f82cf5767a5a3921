package consumer

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.opentelemetry.io/otel/metric"

	"github.com/exactlyhq/exactly/internal/testhook"
)

// committer commits the offsets of one generation's partitions to Kafka in
// the background, after their batches committed in Postgres.
//
// Committing after each batch in the partition's own goroutine made every
// batch wait for a coordinator round trip (Kafka 4.1 also lingers 5ms per
// commit), which halved replay throughput. Offsets only move forward, so the
// committer keeps the latest offset per partition and sends them all in one
// request, one request at a time. When the generation ends it commits what
// is left, before kafka-go closes the coordinator connection.
//
// A commit that fails is kept and retried with backoff until it succeeds,
// a later offset replaces it or the generation ends. Dropping it would leave
// an idle partition's committed offset behind for good: if that stale offset
// outlived the inbox's retention, a restart would apply the messages after it
// again.
type committer struct {
	commit func(map[string]map[int]int64) error
	bo     *backoff.ExponentialBackOff // used by run's goroutine only
	log    *slog.Logger
	errs   metric.Int64Counter
	attrs  metric.MeasurementOption

	mu      sync.Mutex
	pending map[string]map[int]int64
	wake    chan struct{}
}

func newCommitter(commit func(map[string]map[int]int64) error, bo *backoff.ExponentialBackOff, log *slog.Logger, errs metric.Int64Counter, attrs metric.MeasurementOption) *committer {
	return &committer{commit: commit, bo: bo, log: log, errs: errs, attrs: attrs, pending: map[string]map[int]int64{}, wake: make(chan struct{}, 1)}
}

// add records next, the offset after the last message of topic/partition
// settled in Postgres.
func (c *committer) add(topic string, partition int, next int64) {
	c.merge(map[string]map[int]int64{topic: {partition: next}})
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// merge adds offsets to pending, keeping the highest offset per partition.
func (c *committer) merge(offsets map[string]map[int]int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for topic, parts := range offsets {
		if c.pending[topic] == nil {
			c.pending[topic] = map[int]int64{}
		}
		for p, next := range parts {
			if next > c.pending[topic][p] {
				c.pending[topic][p] = next
			}
		}
	}
}

// run commits until genCtx ends, then commits what is left.
func (c *committer) run(genCtx context.Context) {
	var retry <-chan time.Time // set while a failed commit waits for its retry
	for {
		select {
		case <-genCtx.Done():
			c.flush()
			return
		case <-c.wake:
			if retry != nil {
				continue // the retry timer sends it with the failed offsets
			}
		case <-retry:
		}
		retry = nil
		if !c.flush() {
			retry = time.After(c.bo.NextBackOff())
			continue
		}
		c.bo.Reset()
	}
}

// flush commits the pending offsets and reports whether it succeeded (or
// had nothing to do). Failed offsets go back into pending.
func (c *committer) flush() bool {
	c.mu.Lock()
	offsets := c.pending
	c.pending = map[string]map[int]int64{}
	c.mu.Unlock()
	if len(offsets) == 0 {
		return true
	}
	if err := c.commit(offsets); err != nil {
		c.merge(offsets)
		c.errs.Add(context.Background(), 1, c.attrs)
		c.log.Warn("offset commit failed; retrying (messages committed in Postgres and redelivered meanwhile are skipped)", "offsets", offsets, "err", err)
		return false
	}
	testhook.Run(hookAfterOffsetCommit)
	return true
}
