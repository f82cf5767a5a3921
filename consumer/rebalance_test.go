package consumer_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/metrictest"
	"github.com/exactlyhq/exactly/internal/testhook"
)

// TestRebalanceBetweenCommits: the partition moves to another member after
// the first member committed a batch to Postgres and before it committed
// the offset. The new owner gets the batch again and skips every message of
// it (the duplicates are counted, so the overlap really happened); each
// message has one effect. Not parallel: the hook is process-wide, and
// sequential tests run before the parallel ones.
func TestRebalanceBetweenCommits(t *testing.T) {
	b := setup(t, 1)
	const n = 200
	kafkatest.Produce(t, b.writer, msgs("rbc", n, 10)...)

	var once sync.Once
	dbCommitted, release := make(chan struct{}), make(chan struct{})
	testhook.Set("consumer.after-db-commit", func() {
		first := false
		once.Do(func() { first = true })
		if first { // only the first member's first batch stops here
			close(dbCommitted)
			<-release
		}
	})
	t.Cleanup(func() { testhook.Set("consumer.after-db-commit", nil) })
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }

	first, err := consumer.New(b.cfg, insertEffect(b.effects))
	if err != nil {
		t.Fatal(err)
	}
	stopFirst := start(t, first)
	t.Cleanup(free) // runs before start's cleanup, which waits for Run
	select {
	case <-dbCommitted:
	case <-time.After(60 * time.Second):
		t.Fatal("the first member never committed a batch")
	}
	var applied int
	if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+b.effects).Scan(&applied); err != nil || applied == 0 {
		t.Fatalf("%d effects committed by the first member (err %v), want its batch", applied, err)
	}

	// A second member joins while the first is stuck between its two
	// commits: the partition moves to the second once the first misses the
	// rebalance deadline.
	mp := metrictest.NewProvider()
	cfg := b.cfg
	cfg.MeterProvider = mp
	second, err := consumer.New(cfg, insertEffect(b.effects))
	if err != nil {
		t.Fatal(err)
	}
	start(t, second)
	waitCount(t, b.pool, 90*time.Second, n, "SELECT count(*) FROM "+b.effects)
	free()
	stopFirst()
	waitCommitted(t, b, n)
	checkEffects(t, b, n)
	counts, _, _ := collect(t, mp)
	dups := counts[consumer.MetricMessages+"/duplicate"]
	if dups < int64(applied) {
		t.Fatalf("the second member skipped %d duplicates, want the %d messages the first member committed without their offset", dups, applied)
	}
}
