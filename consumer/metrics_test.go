package consumer_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/metrictest"
)

// TestMetrics: processed, duplicate and dead-lettered messages and retries
// are counted; batch durations recorded; the age of the inbox scope's oldest
// token reported.
func TestMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	mp := metrictest.NewProvider()
	b.cfg.MeterProvider = mp
	b.cfg.MaxAttempts = 2
	all := msgs("m", 50, 5)
	kafkatest.Produce(t, b.writer, all...)
	kafkatest.Produce(t, b.writer, all[:10]...)
	apply := insertEffect(b.effects)
	c, err := consumer.New(b.cfg, consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		if m.Token.String() == "m-7" {
			return errors.New("poison")
		}
		return apply(ctx, tx, m)
	}))
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	waitCommitted(t, b, 60)
	// Age the oldest token by a day, as if pruning had stopped.
	if _, err := b.pool.Exec(context.Background(), "UPDATE "+pgx.Identifier{b.schema, "inbox"}.Sanitize()+
		" SET processed_at = processed_at - interval '1 day'"); err != nil {
		t.Fatal(err)
	}
	counts, batches, oldest := collect(t, mp)
	// m-7 was sent twice. A dead letter does not claim its token (so that
	// a replay runs), so the second copy is tried and dead-lettered too.
	want := map[string]int64{
		consumer.MetricMessages + "/processed":     49,
		consumer.MetricMessages + "/duplicate":     9,
		consumer.MetricMessages + "/dead_lettered": 2,
	}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, counts[k], v, counts)
		}
	}
	if counts[consumer.MetricRetries+"/handler"] < 1 || batches == 0 {
		t.Errorf("retries %v, batches %d", counts, batches)
	}
	if age := oldest[consumer.MetricInboxOldestAge+"/"+b.cfg.GroupID]; age < 86400 || age > 86400+600 {
		t.Errorf("%s for scope %s = %.0fs, want a day (all: %v)", consumer.MetricInboxOldestAge, b.cfg.GroupID, age, oldest)
	}
}

// collect reads the metrics: counter sums keyed "name/outcome" or
// "name/kind", the number of batch durations recorded, and float gauges
// keyed "name/scope".
func collect(t *testing.T, mp *metrictest.Provider) (counts map[string]int64, batches uint64, gauges map[string]float64) {
	t.Helper()
	points, err := mp.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	counts, gauges = map[string]int64{}, map[string]float64{}
	for _, p := range points {
		switch {
		case p.Kind == metrictest.Sum && !p.IsFloat:
			key := p.Name
			for _, kv := range p.Attrs.ToSlice() {
				if kv.Key == "outcome" || kv.Key == "kind" {
					key += "/" + kv.Value.AsString()
				}
			}
			counts[key] += p.Int
		case p.Kind == metrictest.Histogram:
			batches += p.Count
		case p.Kind == metrictest.Gauge && p.IsFloat:
			scope, _ := p.Attrs.Value("scope")
			gauges[p.Name+"/"+scope.AsString()] = p.Float
		}
	}
	return counts, batches, gauges
}

// TestRetriesTraced: with a TracerProvider, a handler failure on the
// careful path still goes back to the retry loop (counted, logged, backed
// off) instead of passing for a settled batch.
func TestRetriesTraced(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	mp := metrictest.NewProvider()
	b.cfg.MeterProvider = mp
	b.cfg.TracerProvider = noop.NewTracerProvider()
	b.cfg.MaxAttempts = 3
	kafkatest.Produce(t, b.writer, msgs("m", 10, 5)...)
	apply := insertEffect(b.effects)
	c, err := consumer.New(b.cfg, consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		if m.Token.String() == "m-7" {
			return errors.New("poison")
		}
		return apply(ctx, tx, m)
	}))
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	waitCommitted(t, b, 10)
	counts, _, _ := collect(t, mp)
	if counts[consumer.MetricRetries+"/handler"] < 1 || counts[consumer.MetricMessages+"/dead_lettered"] != 1 {
		t.Errorf("handler retries %d, dead letters %d; want at least 1 and 1 (all: %v)",
			counts[consumer.MetricRetries+"/handler"], counts[consumer.MetricMessages+"/dead_lettered"], counts)
	}
}
