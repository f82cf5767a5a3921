package outbox_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/services"
	"github.com/exactlyhq/exactly/outbox"
)

// TestBrokerStopped stops the broker for 20 seconds while messages are
// enqueued. The rows wait in the outbox, with their failed attempts and last
// error recorded but no rejection counted (an outage must never bring a row
// closer to the dead-letter table), and the backlog drains when the broker is
// back: nothing lost. It does not call t.Parallel: it stops a shared service
// (see internal/services).
func TestBrokerStopped(t *testing.T) {
	b := setup(t, 2)
	b.relay.MaxRejections = 3
	startRelay(t, b.pool, b.relay)
	msg := func(i int) outbox.Message {
		return outbox.Message{Topic: b.topic, Key: []byte("k" + strconv.Itoa(i%5)), Value: []byte(strconv.Itoa(i))}
	}
	enqueue(t, b, msg(0))
	kafkatest.ReadAll(t, b.topic, 2, 1, 30*time.Second)

	services.StopKafka(t)
	stopped := time.Now()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			services.StartKafka(t)
		}
	})
	const n = 500
	for i := 1; i <= n; i++ {
		enqueue(t, b, msg(i))
		if i%50 == 0 {
			time.Sleep(time.Second) // enqueue across the outage
		}
	}
	time.Sleep(time.Until(stopped.Add(20 * time.Second))) // the outage lasts 20s
	if left := countRows(t, b, "outbox"); left != n {
		t.Fatalf("%d rows in the outbox while Kafka is down, want %d", left, n)
	}
	var attempts, rejections int
	var lastError string
	err := b.pool.QueryRow(context.Background(), "SELECT attempts, rejections, last_error FROM "+
		pgx.Identifier{b.schema, "outbox"}.Sanitize()+" ORDER BY attempts DESC LIMIT 1").Scan(&attempts, &rejections, &lastError)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("most tried row while Kafka is down: %d attempts, %d rejections, last error %q", attempts, rejections, lastError)
	if attempts <= b.relay.MaxRejections || rejections != 0 || lastError == "" {
		t.Fatalf("most tried row: %d attempts, %d rejections, last error %q; want more than MaxRejections (%d) attempts, no rejection, an error",
			attempts, rejections, lastError, b.relay.MaxRejections)
	}
	services.StartKafka(t)
	restarted = true
	waitEmpty(t, b)
	got := kafkatest.ReadAll(t, b.topic, 2, n+1, 60*time.Second)
	seen := map[string]bool{}
	for _, m := range got {
		seen[string(m.Value)] = true
	}
	for i := 0; i <= n; i++ {
		if !seen[strconv.Itoa(i)] {
			t.Fatalf("message %d lost", i)
		}
	}
	if countRows(t, b, "outbox_dead_letters") != 0 {
		t.Fatal("an outage dead-lettered rows")
	}
}
