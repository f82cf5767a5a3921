package outbox

import (
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// NewWriter returns a kafka-go Writer configured the way the relay needs:
// acknowledged by all in-sync replicas, synchronous, partitioned by murmur2
// of the key like the Java client, and flushed after 1ms instead of
// kafka-go's default of 1s.
func NewWriter(brokers ...string) *kafka.Writer {
	return &kafka.Writer{
		Addr:            kafka.TCP(brokers...),
		Balancer:        &kafka.Murmur2Balancer{},
		RequiredAcks:    kafka.RequireAll,
		BatchTimeout:    time.Millisecond,
		BatchSize:       1000,
		MaxAttempts:     3,
		WriteBackoffMin: 50 * time.Millisecond,
		WriteBackoffMax: 250 * time.Millisecond,
		Transport:       &kafka.Transport{},
	}
}

// MaxBatchTimeout is the longest Writer.BatchTimeout the relay accepts.
const MaxBatchTimeout = 50 * time.Millisecond

// checkWriter refuses a writer that could lose, reorder or delay messages.
func checkWriter(w *kafka.Writer) error {
	var errs []error
	if w.Addr == nil {
		errs = append(errs, errors.New("Writer.Addr is not set"))
	}
	if w.Topic != "" {
		errs = append(errs, fmt.Errorf("Writer.Topic is %q: it must be empty, the relay sets each message's topic", w.Topic))
	}
	if w.Async {
		errs = append(errs, errors.New("Writer.Async is true: the relay must know a message was acknowledged before it removes the row"))
	}
	if w.RequiredAcks != kafka.RequireAll {
		errs = append(errs, fmt.Errorf("Writer.RequiredAcks is %v: the relay requires kafka.RequireAll, or an acknowledged message can still be lost", w.RequiredAcks))
	}
	switch w.Balancer.(type) {
	case *kafka.Murmur2Balancer, kafka.Murmur2Balancer, *kafka.CRC32Balancer, kafka.CRC32Balancer, *kafka.Hash, *kafka.ReferenceHash:
	case nil:
		errs = append(errs, errors.New("Writer.Balancer is nil, which kafka-go treats as round robin: messages of one key would reach different partitions out of order; use &kafka.Murmur2Balancer{}"))
	default:
		errs = append(errs, fmt.Errorf("Writer.Balancer is %T: the relay needs a key-hash balancer (kafka.Murmur2Balancer, compatible with the Java client) to keep per-key order", w.Balancer))
	}
	if w.BatchTimeout == 0 || w.BatchTimeout > MaxBatchTimeout {
		errs = append(errs, fmt.Errorf("Writer.BatchTimeout is %v (0 means kafka-go's 1s): every publish would wait that long; set at most %v", w.BatchTimeout, MaxBatchTimeout))
	}
	if len(errs) > 0 {
		return fmt.Errorf("outbox: unsafe writer: %w", errors.Join(errs...))
	}
	return nil
}
