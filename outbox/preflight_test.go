package outbox_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/netproxy"
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
