package outbox

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactlyhq/exactly/internal/tracelog"
)

// Defaults of RelayConfig.
const (
	BatchSizeDefault       = 500
	PollIntervalDefault    = 500 * time.Millisecond
	LingerDefault          = 100 * time.Millisecond
	LingerPollDefault      = 2 * time.Millisecond
	MaxRejectionsDefault   = 10
	RetryInitialDefault    = 100 * time.Millisecond
	RetryMaxDefault        = 10 * time.Second
	LockIntervalDefault    = time.Second
	RoundTimeoutDefault    = time.Minute
	ShutdownTimeoutDefault = 10 * time.Second
	StartupTimeoutDefault  = 10 * time.Second
	PruneIntervalDefault   = time.Minute
	PruneBatchSizeDefault  = 1000
)

// RelayConfig configures a Relay.
type RelayConfig struct {
	// Outbox names the table and its shards; it must match the writers'.
	Outbox Config
	// Brokers are Kafka bootstrap addresses, used to build a NewWriter when
	// Writer is nil.
	Brokers []string
	// Writer publishes. It must be synchronous, wait for all in-sync
	// replicas, partition by key hash and flush within MaxBatchTimeout;
	// NewRelay refuses it otherwise. Defaults to NewWriter(Brokers...).
	// Give the relay a writer of its own: its writes must not share record
	// batches with other code's. Its shards share it one write at a time,
	// which costs throughput: prefer Brokers and Transport, with which the
	// relay builds one writer per shard. A write holds at most the writer's
	// BatchSize messages and BatchBytes bytes (so that each partition's
	// share is one record batch, accepted or refused whole); keep BatchBytes
	// at or below the topics' max.message.bytes, or every full write is
	// refused and the relay falls back to one row per write.
	Writer *kafka.Writer
	// Transport connects the writers the relay builds from Brokers (TLS,
	// SASL). Defaults to a plain kafka.Transport of the relay's own, closed
	// when Run returns; one given here is left open. Not with Writer.
	Transport *kafka.Transport
	// BatchSize is the most rows published per round per shard. A round
	// also reads no more rows than one write holds, the writer's BatchBytes
	// (kafka-go's 1 MiB by default), or a single row larger than that, so
	// a relay's memory for rows stays near Shards × BatchBytes whatever
	// their size. Defaults to 500.
	BatchSize int
	// PollInterval is how often an idle shard looks for rows without being
	// notified. Defaults to 500ms; notifications make it a fallback.
	PollInterval time.Duration
	// Linger is how long a shard keeps polling every LingerPoll after it
	// last found rows, to catch rows enqueued inside another writer's
	// NotifyWindow; while rows are held back by an older transaction it
	// polls every 10×LingerPoll. Default to 100ms and 2ms. Linger -1 turns
	// both off: the relay then only wakes on notifications and PollInterval,
	// like a plain polling relay.
	Linger, LingerPoll time.Duration
	// MaxRejections is how many times Kafka may reject one row, for a
	// reason retrying may not fix (too large, unknown topic), before the
	// row moves to the dead-letter table. The row's rejections column
	// counts these; its attempts column counts every failed publish.
	// Failures while Kafka is unreachable are no rejections, so an outage
	// dead-letters nothing, however long it lasts. An unknown topic is one:
	// a topic the brokers do not know through MaxRejections retries of its
	// row (about 40s at the default backoff) dead-letters the row; replay it
	// once the topic exists (`exactly outbox-dead-letters replay`).
	// Defaults to 10; 1 dead-letters a row at its first rejection.
	MaxRejections int
	// RetryInitial and RetryMax bound the backoff after failed publishes.
	// Default to 100ms and 10s.
	RetryInitial, RetryMax time.Duration
	// RoundTimeout bounds one round of a shard: reading its rows,
	// publishing them, deleting them. Past it the round is abandoned, the
	// shard's connection closed and the shard retaken (rows published but
	// not deleted are published again; downstream inboxes skip them).
	// Twice it is the shard session's idle_session_timeout, so that the
	// server releases the shard's lock when the relay's connection died
	// without closing (a half-open TCP connection). Defaults to 1m.
	RoundTimeout time.Duration
	// LockInterval is how often a relay tries to take shards no relay owns,
	// which bounds how long a dead relay's shards stay unpublished.
	// Defaults to 1s.
	LockInterval time.Duration
	// KeepPublished keeps published rows (marked published_at) this long,
	// for audit, and prunes them in batches of PruneBatchSize every
	// PruneInterval. Defaults to 0: rows are deleted once acknowledged.
	KeepPublished time.Duration
	// DeadLetterRetention, when set, deletes the outbox's dead letters
	// resolved (replayed or discarded) longer ago than this, by the
	// database's clock, every PruneInterval. Unresolved dead letters are
	// never deleted. Defaults to 0: kept forever.
	DeadLetterRetention time.Duration
	// PruneInterval and PruneBatchSize pace the pruning of kept rows and
	// resolved dead letters. Default to 1m and 1000.
	PruneInterval  time.Duration
	PruneBatchSize int
	// ShutdownTimeout bounds how long Run spends finishing in-flight rounds
	// after its context ends. Defaults to 10s.
	ShutdownTimeout time.Duration
	// StartupTimeout bounds Run's initial checks that Postgres, the table
	// and Kafka are reachable. Defaults to 10s.
	StartupTimeout time.Duration
	// Logger receives structured logs. Defaults to slog.Default().
	Logger *slog.Logger
	// MeterProvider receives metrics. Defaults to a no-op provider.
	MeterProvider metric.MeterProvider
	// TracerProvider receives a span per message published ("send TOPIC", a
	// producer span, child of the span its traceparent header names, which
	// the relay rewrites to name the send span), so that the consumer's
	// spans continue the trace of the request that enqueued the message.
	// Nil (the default): no spans.
	TracerProvider trace.TracerProvider
}

func (c RelayConfig) withDefaults() RelayConfig {
	c.Outbox = c.Outbox.withDefaults()
	c.BatchSize = cmp.Or(c.BatchSize, BatchSizeDefault)
	c.PollInterval = cmp.Or(c.PollInterval, PollIntervalDefault)
	c.Linger = cmp.Or(c.Linger, LingerDefault)
	c.LingerPoll = cmp.Or(c.LingerPoll, LingerPollDefault)
	c.MaxRejections = cmp.Or(c.MaxRejections, MaxRejectionsDefault)
	c.RetryInitial = cmp.Or(c.RetryInitial, RetryInitialDefault)
	c.RetryMax = cmp.Or(c.RetryMax, RetryMaxDefault)
	c.LockInterval = cmp.Or(c.LockInterval, LockIntervalDefault)
	c.RoundTimeout = cmp.Or(c.RoundTimeout, RoundTimeoutDefault)
	c.PruneInterval = cmp.Or(c.PruneInterval, PruneIntervalDefault)
	c.PruneBatchSize = cmp.Or(c.PruneBatchSize, PruneBatchSizeDefault)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, ShutdownTimeoutDefault)
	c.StartupTimeout = cmp.Or(c.StartupTimeout, StartupTimeoutDefault)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Logger = tracelog.New(c.Logger)
	if c.MeterProvider == nil {
		c.MeterProvider = noop.NewMeterProvider()
	}
	return c
}

func (c RelayConfig) validate() error {
	if err := c.Outbox.validate(); err != nil {
		return err
	}
	var errs []error
	if c.Writer == nil && len(c.Brokers) == 0 {
		errs = append(errs, errors.New("outbox: RelayConfig.Brokers: required when Writer is nil"))
	}
	if c.Writer != nil && c.Transport != nil {
		errs = append(errs, errors.New("outbox: RelayConfig.Transport: set it on the Writer instead (Transport is for the writers the relay builds from Brokers)"))
	}
	if c.BatchSize < 1 || c.BatchSize > MaxEnqueue {
		errs = append(errs, fmt.Errorf("outbox: RelayConfig.BatchSize: %d is not in 1..%d", c.BatchSize, MaxEnqueue))
	}
	if c.MaxRejections < 1 {
		errs = append(errs, fmt.Errorf("outbox: RelayConfig.MaxRejections: must be at least 1, got %d", c.MaxRejections))
	}
	if c.Linger < -1 {
		errs = append(errs, fmt.Errorf("outbox: RelayConfig.Linger: %v; use -1 to turn lingering off", c.Linger))
	}
	for name, d := range map[string]time.Duration{"PollInterval": c.PollInterval, "LingerPoll": c.LingerPoll,
		"RetryInitial": c.RetryInitial, "RetryMax": c.RetryMax, "LockInterval": c.LockInterval, "KeepPublished": c.KeepPublished, "DeadLetterRetention": c.DeadLetterRetention,
		"PruneInterval": c.PruneInterval, "ShutdownTimeout": c.ShutdownTimeout, "StartupTimeout": c.StartupTimeout} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("outbox: RelayConfig.%s: negative duration %v", name, d))
		}
	}
	if c.RetryMax < c.RetryInitial {
		errs = append(errs, fmt.Errorf("outbox: RelayConfig.RetryMax: %v is less than RetryInitial %v", c.RetryMax, c.RetryInitial))
	}
	if c.PruneBatchSize < 1 {
		errs = append(errs, fmt.Errorf("outbox: RelayConfig.PruneBatchSize: must be positive, got %d", c.PruneBatchSize))
	}
	return errors.Join(errs...)
}
