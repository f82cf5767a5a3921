package consumer

import (
	"context"
	"log/slog"
	"sync"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/metric"
)

// committer commits the offsets of one generation's partitions to Kafka in
// the background, after their batches committed in Postgres.
//
// Committing after each batch in the partition's own goroutine made every
// batch wait for a coordinator round trip (Kafka 4.1 also lingers 5ms per
// commit), which halved replay throughput. Offsets only move forward and a
// lost commit only causes a redelivery that the inbox skips, so the
// committer keeps the latest offset per partition and sends them all in one
// request, one request at a time. When the generation ends it commits what
// is left, before kafka-go closes the coordinator connection.
type committer struct {
	gen   *kafka.Generation
	log   *slog.Logger
	errs  metric.Int64Counter
	attrs metric.MeasurementOption

	mu      sync.Mutex
	pending map[string]map[int]int64
	wake    chan struct{}
}

func newCommitter(gen *kafka.Generation, log *slog.Logger, errs metric.Int64Counter, attrs metric.MeasurementOption) *committer {
	return &committer{gen: gen, log: log, errs: errs, attrs: attrs, pending: map[string]map[int]int64{}, wake: make(chan struct{}, 1)}
}

// add records next, the offset after the last message of topic/partition
// settled in Postgres.
func (c *committer) add(topic string, partition int, next int64) {
	c.mu.Lock()
	if c.pending[topic] == nil {
		c.pending[topic] = map[int]int64{}
	}
	if next > c.pending[topic][partition] {
		c.pending[topic][partition] = next
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// run commits until genCtx ends, then commits what is left.
func (c *committer) run(genCtx context.Context) {
	for {
		select {
		case <-genCtx.Done():
			c.flush()
			return
		case <-c.wake:
			c.flush()
		}
	}
}

func (c *committer) flush() {
	c.mu.Lock()
	offsets := c.pending
	c.pending = map[string]map[int]int64{}
	c.mu.Unlock()
	if len(offsets) == 0 {
		return
	}
	if err := c.gen.CommitOffsets(offsets); err != nil {
		c.errs.Add(context.Background(), 1, c.attrs)
		c.log.Warn("offset commit failed; messages committed in Postgres will be redelivered and skipped", "offsets", offsets, "generation", c.gen.ID, "err", err)
	}
}
