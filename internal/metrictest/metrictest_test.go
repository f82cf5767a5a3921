package metrictest_test

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/exactlyhq/exactly/internal/metrictest"
)

// TestProvider: sums add up per attribute set, histograms count, gauges keep
// their last value, observable instruments report what this collection
// observed, an unregistered callback stops, and callback errors come back
// beside the points.
func TestProvider(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := metrictest.NewProvider()
	m := p.Meter("test")
	c, _ := m.Int64Counter("c")
	h, _ := m.Float64Histogram("h")
	g, _ := m.Int64Gauge("g")
	a, b := metric.WithAttributes(attribute.String("k", "a")), metric.WithAttributes(attribute.String("k", "b"))
	c.Add(ctx, 2, a)
	c.Add(ctx, 3, a)
	c.Add(ctx, 1, b)
	h.Record(ctx, 0.5)
	h.Record(ctx, 1.5)
	g.Record(ctx, 7)
	g.Record(ctx, 4)
	var lag int64 = 9
	_, _ = m.Int64ObservableGauge("lag", metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
		if lag > 0 {
			o.Observe(lag)
		}
		return nil
	}))
	age, _ := m.Float64ObservableGauge("age")
	reg, _ := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveFloat64(age, 1.25, a)
		return errors.New("read failed")
	}, age)

	points, err := p.Collect(ctx)
	if err == nil || err.Error() != "read failed" {
		t.Errorf("Collect error %v, want the callback's", err)
	}
	got := map[string]metrictest.Point{}
	for _, pt := range points {
		k, _ := pt.Attrs.Value("k")
		got[pt.Name+"/"+k.AsString()] = pt
	}
	if got["c/a"].Int != 5 || got["c/b"].Int != 1 || got["c/a"].Kind != metrictest.Sum {
		t.Errorf("counter %+v %+v, want 5 and 1", got["c/a"], got["c/b"])
	}
	if pt := got["h/"]; pt.Count != 2 || pt.Float != 2 || !pt.IsFloat || pt.Kind != metrictest.Histogram {
		t.Errorf("histogram %+v, want 2 values summing to 2", pt)
	}
	if got["g/"].Int != 4 || got["lag/"].Int != 9 || got["age/a"].Float != 1.25 {
		t.Errorf("gauges %+v %+v %+v, want 4, 9 and 1.25", got["g/"], got["lag/"], got["age/a"])
	}

	lag = 0
	if err := reg.Unregister(); err != nil {
		t.Fatal(err)
	}
	points, err = p.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, pt := range points {
		if pt.Name == "lag" || pt.Name == "age" {
			t.Errorf("%+v reported without an observation in this collection", pt)
		}
	}
	if len(points) != 4 {
		t.Errorf("%d points after the observables went quiet, want the 4 synchronous series: %+v", len(points), points)
	}
}
