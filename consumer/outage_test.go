package consumer_test

import (
	"testing"
	"time"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/services"
)

// The outage tests restart shared services, so they do not call t.Parallel:
// Go runs them before any parallel test of this package, and `make test`
// runs one package at a time.

// TestOutages restarts Postgres, then the Kafka broker, while the consumer
// works. The consumer recovers by itself; every effect lands exactly once.
func TestOutages(t *testing.T) {
	for _, tc := range []struct {
		name    string
		restart func(testing.TB)
	}{
		{"postgres", services.RestartPostgres},
		{"kafka", services.RestartKafka},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := setup(t, 2)
			const n = 4000
			all := msgs(tc.name, n, 20)
			c, err := consumer.New(b.cfg, insertEffect(b.effects))
			if err != nil {
				t.Fatal(err)
			}
			start(t, c)
			kafkatest.Produce(t, b.writer, all[:2000]...)
			waitCount(t, b.pool, 60*time.Second, 500, "SELECT count(*) FROM "+b.effects)
			tc.restart(t)
			kafkatest.Produce(t, b.writer, all[2000:]...)
			kafkatest.Produce(t, b.writer, all[1000:1500]...) // duplicates across the outage
			waitCommitted(t, b, n+500)
			checkEffects(t, b, n)
		})
	}
}
