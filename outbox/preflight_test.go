package outbox_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/netproxy"
	"github.com/exactlyhq/exactly/internal/pgtest"
	"github.com/exactlyhq/exactly/internal/runtest"
	"github.com/exactlyhq/exactly/outbox"
)

// TestNetRelayPreflightDial: a relay whose brokers are reachable only
// through its Transport's Dial (a proxy, a tunnel, another network) starts
// and publishes. Relay.preflight probed the brokers with a kafka.Dialer
// that copied the Transport's TLS and SASL settings but not its Dial, so
// the probe dialed the broker address itself and the relay refused to start.
func TestNetRelayPreflightDial(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	proxy := netproxy.Start(t, kafkatest.Brokers()[0])
	transport := &kafka.Transport{Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, proxy.Addr())
	}}
	t.Cleanup(transport.CloseIdleConnections)
	cfg := b.relay
	cfg.Brokers = []string{"kafka.invalid:9092"} // reachable only through transport
	cfg.Transport = transport
	cfg.Logger = testLogger(t)
	r, err := outbox.NewRelay(b.pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	ids := enqueue(t, b, orderedMessages(b.topic, 0, 10)...)
	deadline := time.Now().Add(15 * time.Second)
	for countRows(t, b, "outbox") > 0 {
		select {
		case err := <-done:
			t.Fatalf("Run returned %v before publishing anything", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing published in 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	readTopic(t, b, 2, ids)
}

// TestRelayStartupTimeout: a broker that accepts connections and never
// answers fails Run within RelayConfig.StartupTimeout, not the 10s default.
func TestRelayStartupTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	proxy := netproxy.Start(t, kafkatest.Brokers()[0])
	proxy.Blackhole()
	cfg := b.relay
	cfg.Brokers = []string{proxy.Addr()}
	cfg.StartupTimeout = 500 * time.Millisecond
	cfg.Logger = testLogger(t)
	r, err := outbox.NewRelay(b.pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err = r.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "no Kafka broker answers") {
		t.Fatalf("Run against a silent broker: %v, want no Kafka broker answers", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Run returned after %v, want about StartupTimeout (500ms)", d)
	}
}

// TestRelayErrRunning: a second Run of a running Relay returns ErrRunning
// at once and leaves the first one publishing.
func TestRelayErrRunning(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	cfg := b.relay
	cfg.Logger = testLogger(t)
	r, err := outbox.NewRelay(b.pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := runtest.Background(t, "relay", 30*time.Second, r.Run)
	waitOwned(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Run(ctx); !errors.Is(err, outbox.ErrRunning) {
		t.Fatalf("second Run: %v, want ErrRunning", err)
	}
	ids := enqueue(t, b, orderedMessages(b.topic, 0, 3)...)
	waitEmpty(t, b)
	stop()
	readTopic(t, b, 1, ids)
}

// waitOwned waits until a relay owns every shard of b's outbox.
func waitOwned(t *testing.T, b bundle) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, err := outbox.Shards(context.Background(), b.pool, b.ob.Config())
		if err != nil {
			t.Fatal(err)
		}
		owned := 0
		for _, s := range st {
			if s.Owned {
				owned++
			}
		}
		if owned == len(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d shards owned after 15s", owned, len(st))
		}
	}
}

// TestRelayConfigNamesField: NewRelay refuses a negative StartupTimeout or
// MaxRejections, naming the field.
func TestRelayConfigNamesField(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	for field, cfg := range map[string]outbox.RelayConfig{
		"RelayConfig.StartupTimeout": {Brokers: kafkatest.Brokers(), StartupTimeout: -time.Second},
		"RelayConfig.MaxRejections":  {Brokers: kafkatest.Brokers(), MaxRejections: -1},
	} {
		if _, err := outbox.NewRelay(pool, cfg); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("NewRelay with a bad %s: %v, want an error naming it", field, err)
		}
	}
}
