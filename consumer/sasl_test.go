package consumer_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/plain"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/internal/kafkatest"
)

// TestSASL: through the broker's SASL listeners, plaintext and TLS, a
// consumer given a Dialer with the right credentials (and over TLS the
// broker's CA) consumes; with a wrong password Run fails at once, naming the
// authentication failure, and over TLS without the CA it fails at once,
// naming the certificate.
func TestSASL(t *testing.T) {
	t.Parallel()
	for _, l := range kafkatest.SASLListeners(t) {
		t.Run(l.Name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, 2)
			kafkatest.Produce(t, b.writer, msgs("sasl", 100, 5)...)
			dialer := func(password string, tlsCfg *tls.Config) *kafka.Dialer {
				return &kafka.Dialer{Timeout: 5 * time.Second, TLS: tlsCfg,
					SASLMechanism: plain.Mechanism{Username: kafkatest.SASLUser, Password: password}}
			}
			cfg := b.cfg
			cfg.Brokers = l.Brokers
			cfg.Dialer = dialer(kafkatest.SASLPassword, l.TLS)
			c, err := consumer.New(cfg, insertEffect(b.effects))
			if err != nil {
				t.Fatal(err)
			}
			start(t, c)
			waitCommitted(t, b, 100)
			checkEffects(t, b, 100)

			runFails(t, b, l.Brokers, dialer("wrong", l.TLS), "SASL Authentication Failed")
			if l.TLS != nil {
				runFails(t, b, l.Brokers, dialer(kafkatest.SASLPassword, &tls.Config{MinVersion: tls.VersionTLS12}), "certificate signed by unknown authority")
			}
		})
	}
}

// runFails runs a consumer of b's topic through brokers with dialer and
// wants Run to fail within 30s with an error containing want.
func runFails(t *testing.T, b bundle, brokers []string, dialer *kafka.Dialer, want string) {
	t.Helper()
	cfg := b.cfg
	cfg.GroupID += "-refused"
	cfg.Brokers = brokers
	cfg.StartupTimeout = 5 * time.Second
	cfg.Dialer = dialer
	c, err := consumer.New(cfg, consumer.HandlerFunc(func(context.Context, pgx.Tx, consumer.Message) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Run(ctx); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Run: %v, want an error containing %q", err, want)
	}
}
