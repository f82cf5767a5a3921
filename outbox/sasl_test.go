package outbox_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/plain"

	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/outbox"
)

// TestSASL: through the broker's SASL listener, a relay given a Transport
// with the right credentials publishes; with a wrong password Run fails at
// once, naming the authentication failure.
func TestSASL(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	cfg := b.relay
	cfg.Brokers = kafkatest.SASLBrokers()
	cfg.Transport = &kafka.Transport{SASL: plain.Mechanism{Username: kafkatest.SASLUser, Password: kafkatest.SASLPassword}}
	t.Cleanup(cfg.Transport.CloseIdleConnections) // the relay leaves a given transport open
	startRelay(t, b.pool, cfg)
	enqueue(t, b, outbox.Message{Topic: b.topic, Key: []byte("k"), Value: []byte("over SASL")})
	if got := kafkatest.ReadAll(t, b.topic, 2, 1, 30*time.Second); string(got[0].Value) != "over SASL" {
		t.Fatalf("published %q", got[0].Value)
	}

	cfg.Transport = &kafka.Transport{SASL: plain.Mechanism{Username: kafkatest.SASLUser, Password: "wrong"}}
	t.Cleanup(cfg.Transport.CloseIdleConnections)
	r, err := outbox.NewRelay(b.pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Run(ctx); err == nil || !strings.Contains(err.Error(), "SASL Authentication Failed") {
		t.Fatalf("Run with a wrong SASL password: %v", err)
	}
}
