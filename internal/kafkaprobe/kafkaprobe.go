// Package kafkaprobe checks at start-up that a Kafka broker answers, so
// that a wrong address fails fast with a clear error instead of a silent
// retry loop.
package kafkaprobe

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/segmentio/kafka-go"
)

// Reachable returns nil as soon as one of brokers answers an ApiVersions
// request, and an error naming every address tried otherwise. It gives up
// on every broker when ctx ends, also one that accepted the connection and
// never answers.
func Reachable(ctx context.Context, dialer *kafka.Dialer, brokers []string) error {
	if dialer == nil {
		dialer = kafka.DefaultDialer
	}
	var errs []error
	for _, b := range brokers {
		err := answers(ctx, dialer, b)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("no Kafka broker answers at %v: %w", brokers, errors.Join(errs...))
}

// answers dials broker and asks for its API versions. kafka-go bounds only
// the dial by ctx: a connection it returns has no deadline, so its SASL
// exchange and the request would wait forever on a peer that accepted the
// connection and says nothing (a proxy whose upstream is down, a wrong
// port). The connection is closed when ctx ends instead.
func answers(ctx context.Context, dialer *kafka.Dialer, broker string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d := *dialer
	dial := d.DialFunc
	if dial == nil { // what kafka-go dials with when DialFunc is nil
		dial = (&net.Dialer{LocalAddr: d.LocalAddr, FallbackDelay: d.FallbackDelay, KeepAlive: d.KeepAlive}).DialContext
	}
	d.DialFunc = func(dctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(dctx, network, addr)
		if err == nil {
			context.AfterFunc(ctx, func() { _ = c.Close() })
		}
		return c, err
	}
	conn, err := d.DialContext(ctx, "tcp", broker)
	if err == nil {
		_, err = conn.ApiVersions()
		_ = conn.Close()
	}
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%s: no answer before %w (%w)", broker, ctx.Err(), err)
	}
	return err
}
