package consumer

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/exactlyhq/exactly/inbox"
)

// Metric names. All carry the attribute "group"; messages carries
// "outcome" (processed, duplicate, dead_lettered), retries carries "kind"
// (handler, transient), lag carries "topic" and "partition". The inbox's
// oldest token age carries "scope" (and "group"), measured while Run runs
// (not with Config.AtLeastOnce).
const (
	MetricMessages       = "exactly.consumer.messages"
	MetricRetries        = "exactly.consumer.retries"
	MetricBatchDuration  = "exactly.consumer.batch.duration"
	MetricCommitErrors   = "exactly.consumer.offset_commit.errors"
	MetricSkipped        = "exactly.consumer.skipped"
	MetricLag            = "exactly.consumer.lag"
	MetricInboxOldestAge = "exactly.inbox.oldest_age"
)

// secondsBuckets are the histogram bounds, in seconds, of the consumer's
// and relay's durations: from a millisecond to a minute. (The SDK's
// default bounds assume milliseconds and would put every batch in the
// first bucket.)
var secondsBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

type metrics struct {
	meter         metric.Meter
	inboxOldest   metric.Float64ObservableGauge
	messages      metric.Int64Counter
	retries       metric.Int64Counter
	batchDuration metric.Float64Histogram
	commitErrors  metric.Int64Counter
	skipped       metric.Int64Counter

	mu   sync.Mutex
	lags map[lagKey]*atomic.Int64
}

type lagKey struct {
	group, topic string
	partition    int
}

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	meter := mp.Meter("github.com/exactlyhq/exactly/consumer")
	m := &metrics{meter: meter, lags: map[lagKey]*atomic.Int64{}}
	var err error
	if m.inboxOldest, err = meter.Float64ObservableGauge(MetricInboxOldestAge, metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest token in the inbox scope (0 when empty). Past the retention, pruning has stopped and the inbox grows.")); err != nil {
		return nil, err
	}
	if m.messages, err = meter.Int64Counter(MetricMessages, metric.WithDescription("Messages settled, by outcome.")); err != nil {
		return nil, err
	}
	if m.retries, err = meter.Int64Counter(MetricRetries, metric.WithDescription("Batch retries, by kind.")); err != nil {
		return nil, err
	}
	if m.batchDuration, err = meter.Float64Histogram(MetricBatchDuration, metric.WithUnit("s"), metric.WithDescription("Time from the start of a batch's transaction to its commit."),
		metric.WithExplicitBucketBoundaries(secondsBuckets...)); err != nil {
		return nil, err
	}
	if m.commitErrors, err = meter.Int64Counter(MetricCommitErrors, metric.WithDescription("Kafka offset commits that failed after the database commit (the messages are redelivered and skipped).")); err != nil {
		return nil, err
	}
	if m.skipped, err = meter.Int64Counter(MetricSkipped, metric.WithDescription("Messages Kafka's retention deleted before the group processed them: lost to it. Any increase needs a person.")); err != nil {
		return nil, err
	}
	_, err = meter.Int64ObservableGauge(MetricLag, metric.WithDescription("Messages between the last processed offset and the partition's high watermark."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			m.mu.Lock()
			defer m.mu.Unlock()
			for k, v := range m.lags {
				o.Observe(v.Load(), metric.WithAttributes(attribute.String("group", k.group), attribute.String("topic", k.topic), attribute.Int("partition", k.partition)))
			}
			return nil
		}))
	if err != nil {
		return nil, err
	}
	return m, nil
}

// inboxReadTimeout bounds the query behind the inbox age at a collection:
// while Postgres is slow or down, a scrape must not time out and lose every
// other metric with it.
const inboxReadTimeout = time.Second

// observeInbox reports the age of the scope's oldest token at every
// collection until the registration is unregistered. When the read fails
// the last known oldest token's age is reported, and the error returned
// (the SDK hands it to otel.Handle and keeps the other metrics).
func (m *metrics) observeInbox(store *inbox.Store, group string) (metric.Registration, error) {
	attrs := metric.WithAttributes(attribute.String("scope", store.Config().Scope), attribute.String("group", group))
	var (
		mu     sync.Mutex
		known  bool
		oldest time.Time
	)
	return m.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, inboxReadTimeout)
		defer cancel()
		t, err := store.Oldest(ctx)
		mu.Lock()
		defer mu.Unlock()
		if err == nil {
			known, oldest = true, t
		}
		if known {
			age := 0.0
			if !oldest.IsZero() {
				age = time.Since(oldest).Seconds()
			}
			o.ObserveFloat64(m.inboxOldest, age, attrs)
		}
		return err
	}, m.inboxOldest)
}

// lag returns the gauge cell of one partition; release removes it.
func (m *metrics) lag(k lagKey) (cell *atomic.Int64, release func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cell = &atomic.Int64{}
	m.lags[k] = cell
	return cell, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.lags[k] == cell {
			delete(m.lags, k)
		}
	}
}
