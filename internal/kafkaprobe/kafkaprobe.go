// Package kafkaprobe checks at start-up that a Kafka broker answers, so
// that a wrong address fails fast with a clear error instead of a silent
// retry loop.
package kafkaprobe

import (
	"context"
	"errors"
	"fmt"

	"github.com/segmentio/kafka-go"
)

// Reachable returns nil as soon as one of brokers answers an ApiVersions
// request, and an error naming every address tried otherwise.
func Reachable(ctx context.Context, dialer *kafka.Dialer, brokers []string) error {
	if dialer == nil {
		dialer = kafka.DefaultDialer
	}
	var errs []error
	for _, b := range brokers {
		conn, err := dialer.DialContext(ctx, "tcp", b)
		if err == nil {
			_, err = conn.ApiVersions()
			_ = conn.Close()
			if err == nil {
				return nil
			}
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("no Kafka broker answers at %v: %w", brokers, errors.Join(errs...))
}
