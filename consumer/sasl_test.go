package consumer_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/plain"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/internal/kafkatest"
)

// TestSASL: through the broker's SASL listener, a consumer given a Dialer
// with the right credentials consumes; with a wrong password Run fails at
// once, naming the authentication failure.
func TestSASL(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	kafkatest.Produce(t, b.writer, msgs("sasl", 100, 5)...)
	cfg := b.cfg
	cfg.Brokers = kafkatest.SASLBrokers()
	cfg.Dialer = &kafka.Dialer{Timeout: 10 * time.Second, SASLMechanism: plain.Mechanism{Username: kafkatest.SASLUser, Password: kafkatest.SASLPassword}}
	c, err := consumer.New(cfg, insertEffect(b.effects))
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	waitCommitted(t, b, 100)
	checkEffects(t, b, 100)

	wrong := b.cfg
	wrong.GroupID += "-wrong"
	wrong.Brokers = kafkatest.SASLBrokers()
	wrong.StartupTimeout = 5 * time.Second
	wrong.Dialer = &kafka.Dialer{Timeout: 5 * time.Second, SASLMechanism: plain.Mechanism{Username: kafkatest.SASLUser, Password: "wrong"}}
	c, err = consumer.New(wrong, consumer.HandlerFunc(func(context.Context, pgx.Tx, consumer.Message) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Run(ctx); err == nil || !strings.Contains(err.Error(), "SASL Authentication Failed") {
		t.Fatalf("Run with a wrong SASL password: %v", err)
	}
}
