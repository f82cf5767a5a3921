package consumer_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/services"
)

// The outage tests restart shared services, so they do not call t.Parallel:
// Go runs them before any parallel test of this package, and `make test`
// runs one package at a time.

// TestOutages restarts Postgres, then the Kafka broker, while the consumer
// works. The consumer recovers by itself; every effect lands exactly once.
// Postgres restarts while a batch transaction is open: a handler holds it
// until the restart is over, then writes on a connection that is gone.
func TestOutages(t *testing.T) {
	for _, tc := range []struct {
		name    string
		restart func(testing.TB)
		lanes   int
	}{
		{"postgres", services.RestartPostgres, 1},
		{"kafka", services.RestartKafka, 1},
		{"postgres-lanes", services.RestartPostgres, 8}, // KeyConcurrency: the same promises
		{"kafka-lanes", services.RestartKafka, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := setup(t, 2)
			b.cfg.KeyConcurrency = tc.lanes
			const n = 4000
			all := msgs(tc.name, n, 20)
			holdToken := tc.name + "-1000"
			var held atomic.Bool
			holding, restarted := make(chan struct{}), make(chan struct{})
			apply := insertEffect(b.effects)
			c, err := consumer.New(b.cfg, consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
				if m.Token.String() == holdToken && held.CompareAndSwap(false, true) {
					close(holding)
					<-restarted
				}
				return apply(ctx, tx, m)
			}))
			if err != nil {
				t.Fatal(err)
			}
			start(t, c)
			var restartedOnce sync.Once
			endRestart := func() { restartedOnce.Do(func() { close(restarted) }) }
			t.Cleanup(endRestart) // runs before start's cleanup, which waits for Run
			kafkatest.Produce(t, b.writer, all[:2000]...)
			select {
			case <-holding:
			case <-time.After(60 * time.Second):
				t.Fatal("the consumer never reached " + holdToken)
			}
			tc.restart(t)
			endRestart()
			kafkatest.Produce(t, b.writer, all[2000:]...)
			kafkatest.Produce(t, b.writer, all[1000:1500]...) // duplicates across the outage
			waitCommitted(t, b, n+500)
			checkEffects(t, b, n)
			if dl := deadLetters(t, b); len(dl) != 0 {
				t.Fatalf("the outage dead-lettered %v", dl)
			}
		})
	}
}
