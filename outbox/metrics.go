package outbox

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Metric names, each with the attribute "table".
const (
	MetricPublished    = "exactly.outbox.published"
	MetricFailures     = "exactly.outbox.publish_failures"
	MetricDeadLettered = "exactly.outbox.dead_lettered"
	MetricLatency      = "exactly.outbox.latency"
	MetricOwnedShards  = "exactly.outbox.owned_shards"
	MetricBacklog      = "exactly.outbox.backlog"
	MetricOldestAge    = "exactly.outbox.oldest_age"
	MetricShardOwned   = "exactly.outbox.shard_owned"

	MetricRowsOutsideShards = "exactly.outbox.rows_outside_shards"
)

// latencyBuckets are the bounds, in seconds, of the publish latency
// histogram: from a millisecond to a minute.
var latencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

func (r *Relay) initMetrics() error {
	m := r.cfg.MeterProvider.Meter("github.com/exactlyhq/exactly/outbox")
	var err error
	if r.published, err = m.Int64Counter(MetricPublished, metric.WithDescription("Rows published and acknowledged.")); err != nil {
		return err
	}
	if r.failures, err = m.Int64Counter(MetricFailures, metric.WithDescription("Rows whose publish failed, by class (transient, permanent).")); err != nil {
		return err
	}
	if r.dead, err = m.Int64Counter(MetricDeadLettered, metric.WithDescription("Rows moved to the dead-letter table.")); err != nil {
		return err
	}
	if r.latency, err = m.Float64Histogram(MetricLatency, metric.WithUnit("s"), metric.WithDescription("Time from enqueue to Kafka acknowledgement."),
		metric.WithExplicitBucketBoundaries(latencyBuckets...)); err != nil {
		return err
	}
	_, err = m.Int64ObservableGauge(MetricOwnedShards, metric.WithDescription("Shards this relay owns."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(r.owned.Load(), r.attrs)
			return nil
		}))
	if err != nil {
		return err
	}
	// The table-wide view (every relay reports it; alert on max or any):
	// backlog, age of the oldest row and whether any relay owns each shard.
	backlog, err := m.Int64ObservableGauge(MetricBacklog, metric.WithDescription("Rows waiting to be published, by shard."))
	if err != nil {
		return err
	}
	oldest, err := m.Float64ObservableGauge(MetricOldestAge, metric.WithUnit("s"), metric.WithDescription("Age of the oldest row waiting to be published, by shard (0 when empty)."))
	if err != nil {
		return err
	}
	ownedBy, err := m.Int64ObservableGauge(MetricShardOwned, metric.WithDescription("1 when some relay holds the shard's lock, 0 when no relay does."))
	if err != nil {
		return err
	}
	outside, err := m.Int64ObservableGauge(MetricRowsOutsideShards, metric.WithDescription(
		"Rows waiting in shards outside 0..Shards-1 of this relay's configuration: enqueued by writers configured with more shards, published by no relay configured like this one."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		shards, err := Shards(ctx, r.pool, r.cfg.Outbox)
		if err != nil {
			return err
		}
		now := time.Now()
		var stray int64
		for _, s := range shards {
			attrs := metric.WithAttributes(attribute.String("table", r.cfg.Outbox.Schema+"."+r.cfg.Outbox.Table), attribute.Int("shard", s.Shard))
			// A shard outside the relay's shards that holds rows is
			// reported like its own: its rows wait in the backlog, and
			// unless a relay configured with more shards owns it, it has
			// no relay.
			o.ObserveInt64(backlog, s.Backlog, attrs)
			age := 0.0
			if !s.Oldest.IsZero() {
				age = now.Sub(s.Oldest).Seconds()
			}
			o.ObserveFloat64(oldest, age, attrs)
			if s.Outside {
				stray += s.Backlog
			}
			owned := int64(0)
			if s.Owned {
				owned = 1
			}
			o.ObserveInt64(ownedBy, owned, attrs)
		}
		o.ObserveInt64(outside, stray, r.attrs)
		return nil
	}, backlog, oldest, ownedBy, outside)
	return err
}
