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

// TestPostgresRestart restarts Postgres while the consumer works. The
// consumer retries by itself; every effect lands exactly once.
func TestPostgresRestart(t *testing.T) {
	b := setup(t, 2)
	const n = 4000
	all := msgs("pg", n, 20)
	c, err := consumer.New(b.cfg, insertEffect(b.effects))
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	kafkatest.Produce(t, b.writer, all[:2000]...)
	waitCount(t, b.pool, 60*time.Second, 500, "SELECT count(*) FROM "+b.effects)
	services.RestartPostgres(t)
	kafkatest.Produce(t, b.writer, all[2000:]...)
	kafkatest.Produce(t, b.writer, all[1000:1500]...) // duplicates across the outage
	waitCommitted(t, b, n+500)
	checkEffects(t, b, n)
}

// TestBrokerRestart restarts the Kafka broker while the consumer works. The
// consumer rejoins by itself; every effect lands exactly once.
func TestBrokerRestart(t *testing.T) {
	b := setup(t, 2)
	const n = 4000
	all := msgs("kb", n, 20)
	c, err := consumer.New(b.cfg, insertEffect(b.effects))
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	kafkatest.Produce(t, b.writer, all[:2000]...)
	waitCount(t, b.pool, 60*time.Second, 500, "SELECT count(*) FROM "+b.effects)
	services.RestartKafka(t)
	kafkatest.Produce(t, b.writer, all[2000:]...)
	kafkatest.Produce(t, b.writer, all[1000:1500]...)
	waitCommitted(t, b, n+500)
	checkEffects(t, b, n)
}
