package outbox_test

import (
	"context"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/outbox"
)

// TestRelayMetrics: published rows are counted, and the table view reports
// the backlog and shard owners.
func TestRelayMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	reader := sdkmetric.NewManualReader()
	cfg := b.relay
	cfg.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	var msgs []outbox.Message
	for range 20 {
		msgs = append(msgs, outbox.Message{Topic: b.topic, Value: []byte("m")})
	}
	enqueue(t, b, msgs...)
	startRelay(t, b.pool, cfg)
	kafkatest.ReadAll(t, b.topic, 1, 20, 30*time.Second)
	waitEmpty(t, b)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := collect(t, reader)
		if got[outbox.MetricPublished] == 20 && got[outbox.MetricShardOwned] == int64(b.ob.Config().Shards) && got[outbox.MetricBacklog] == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics %v: want 20 published, every shard owned, no backlog", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// collect sums every integer data point by metric name.
func collect(t *testing.T, r *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[m.Name] += p.Value
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					out[m.Name] += p.Value
				}
			}
		}
	}
	return out
}
