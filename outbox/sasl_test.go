package outbox_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/plain"

	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/outbox"
)

// TestSASL: through the broker's SASL listeners, plaintext and TLS, a relay
// given a Transport with the right credentials (and over TLS the broker's
// CA) publishes; with a wrong password Run fails at once, naming the
// authentication failure, and over TLS without the CA it fails at once,
// naming the certificate.
func TestSASL(t *testing.T) {
	t.Parallel()
	for _, l := range kafkatest.SASLListeners(t) {
		t.Run(l.Name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, 2)
			cfg := b.relay
			cfg.Brokers = l.Brokers
			transport := func(password string, tlsCfg *tls.Config) *kafka.Transport {
				tr := &kafka.Transport{TLS: tlsCfg, SASL: plain.Mechanism{Username: kafkatest.SASLUser, Password: password}}
				t.Cleanup(tr.CloseIdleConnections) // the relay leaves a given transport open
				return tr
			}
			cfg.Transport = transport(kafkatest.SASLPassword, l.TLS)
			startRelay(t, b.pool, cfg)
			enqueue(t, b, outbox.Message{Topic: b.topic, Key: []byte("k"), Value: []byte("over " + l.Name)})
			if got := kafkatest.ReadAll(t, b.topic, 2, 1, 30*time.Second); string(got[0].Value) != "over "+l.Name {
				t.Fatalf("published %q", got[0].Value)
			}

			refused := func(tr *kafka.Transport, want string) {
				t.Helper()
				cfg.Transport = tr
				r, err := outbox.NewRelay(b.pool, cfg)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := r.Run(ctx); err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("Run: %v, want an error containing %q", err, want)
				}
			}
			refused(transport("wrong", l.TLS), "SASL Authentication Failed")
			if l.TLS != nil {
				refused(transport(kafkatest.SASLPassword, &tls.Config{MinVersion: tls.VersionTLS12}), "certificate signed by unknown authority")
			}
		})
	}
}
