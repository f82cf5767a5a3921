// Package metrictest records what code reports through the OpenTelemetry
// metric API, so that tests can read the library's metrics without the
// OpenTelemetry SDK: the SDK (and the exporters that come with it) would
// otherwise be a requirement of the module, and so of every program that
// imports it.
//
// It keeps what the tests need and no more: sums, histogram counts and sums,
// and last values, per instrument name and attribute set. Instruments of
// every meter of a [Provider] share one namespace (scope names are ignored),
// and descriptions, units and bucket boundaries are not kept. Observable
// instruments report only what their callbacks observed during the
// [Provider.Collect] at hand, as the SDK does.
package metrictest

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/embedded"
)

// Kind is how an instrument aggregates its values.
type Kind int

const (
	// Sum adds increments: counters and up-down counters. An observable
	// counter observes the total itself.
	Sum Kind = iota + 1
	// Histogram counts the values recorded and adds them up.
	Histogram
	// Gauge keeps the last value.
	Gauge
)

// Point is one series of one instrument at a collection.
type Point struct {
	Name  string
	Kind  Kind
	Attrs attribute.Set
	// IsFloat reports whether the instrument records float64 values, kept
	// in Float, rather than int64 values, kept in Int.
	IsFloat bool
	// Int and Float hold a sum's total, a gauge's last value or the sum of
	// a histogram's values.
	Int   int64
	Float float64
	// Count is how many values a histogram recorded.
	Count uint64
}

// Provider is a metric.MeterProvider that keeps what its instruments record.
// It is safe for concurrent use.
type Provider struct {
	embedded.MeterProvider

	mu        sync.Mutex
	series    map[seriesKey]*Point // synchronous instruments
	callbacks map[*callback]struct{}
}

type seriesKey struct {
	name  string
	attrs attribute.Distinct
}

// callback is one function that observes, run at every collection.
type callback struct {
	run func(ctx context.Context, o *observation) error
}

// NewProvider returns an empty Provider.
func NewProvider() *Provider {
	return &Provider{series: map[seriesKey]*Point{}, callbacks: map[*callback]struct{}{}}
}

// Meter returns a meter whose instruments record into p.
func (p *Provider) Meter(string, ...metric.MeterOption) metric.Meter { return &meter{p: p} }

// Collect runs the observable instruments' callbacks and returns every
// series, ordered by name. The error joins those the callbacks returned;
// the points are complete but for what a failing callback did not observe.
func (p *Provider) Collect(ctx context.Context) ([]Point, error) {
	p.mu.Lock()
	cbs := make([]*callback, 0, len(p.callbacks))
	for c := range p.callbacks {
		cbs = append(cbs, c)
	}
	p.mu.Unlock()
	// Callbacks run without p.mu: they take locks of their own and may
	// record into synchronous instruments.
	o := &observation{series: map[seriesKey]*Point{}}
	var errs []error
	for _, c := range cbs {
		if err := c.run(ctx, o); err != nil {
			errs = append(errs, err)
		}
	}
	p.mu.Lock()
	points := make([]Point, 0, len(p.series)+len(o.series))
	for _, s := range p.series {
		points = append(points, *s)
	}
	p.mu.Unlock()
	for _, s := range o.series {
		points = append(points, *s)
	}
	slices.SortFunc(points, func(a, b Point) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Attrs.Encoded(attribute.DefaultEncoder()), b.Attrs.Encoded(attribute.DefaultEncoder())))
	})
	return points, errors.Join(errs...)
}

func (p *Provider) register(c *callback) metric.Registration {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.callbacks[c] = struct{}{}
	return &registration{p: p, c: c}
}

// record adds a synchronous measurement.
func record[N int64 | float64](p *Provider, name string, kind Kind, attrs attribute.Set, v N) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := seriesKey{name, attrs.Equivalent()}
	s := p.series[k]
	if s == nil {
		s = &Point{Name: name, Kind: kind, Attrs: attrs}
		p.series[k] = s
	}
	apply(s, kind, v)
}

func apply[N int64 | float64](s *Point, kind Kind, v N) {
	switch v := any(v).(type) {
	case int64:
		if kind == Gauge {
			s.Int = v
		} else {
			s.Int += v
		}
	case float64:
		s.IsFloat = true
		if kind == Gauge {
			s.Float = v
		} else {
			s.Float += v
		}
	}
	if kind == Histogram {
		s.Count++
	}
}

// observation collects what callbacks observe during one collection.
type observation struct {
	mu     sync.Mutex
	series map[seriesKey]*Point
}

func observe[N int64 | float64](o *observation, name string, kind Kind, v N, opts []metric.ObserveOption) {
	attrs := metric.NewObserveConfig(opts).Attributes()
	o.mu.Lock()
	defer o.mu.Unlock()
	k := seriesKey{name, attrs.Equivalent()}
	// An observation is the value itself, a counter's total included: the
	// last one of a collection wins.
	s := &Point{Name: name, Kind: kind, Attrs: attrs}
	apply(s, Gauge, v)
	o.series[k] = s
}

type registration struct {
	embedded.Registration
	p *Provider
	c *callback
}

func (r *registration) Unregister() error {
	r.p.mu.Lock()
	defer r.p.mu.Unlock()
	delete(r.p.callbacks, r.c)
	return nil
}

type meter struct {
	embedded.Meter
	p *Provider
}

// instrument is a synchronous instrument of any kind.
type instrument[N int64 | float64] struct {
	embedded.Int64Counter
	embedded.Int64UpDownCounter
	embedded.Int64Histogram
	embedded.Int64Gauge
	embedded.Float64Counter
	embedded.Float64UpDownCounter
	embedded.Float64Histogram
	embedded.Float64Gauge
	p    *Provider
	name string
	kind Kind
}

func (i *instrument[N]) Add(_ context.Context, v N, opts ...metric.AddOption) {
	record(i.p, i.name, i.kind, metric.NewAddConfig(opts).Attributes(), v)
}

func (i *instrument[N]) Record(_ context.Context, v N, opts ...metric.RecordOption) {
	record(i.p, i.name, i.kind, metric.NewRecordConfig(opts).Attributes(), v)
}

func (i *instrument[N]) Enabled(context.Context) bool { return true }

func (m *meter) Int64Counter(name string, _ ...metric.Int64CounterOption) (metric.Int64Counter, error) {
	return &instrument[int64]{p: m.p, name: name, kind: Sum}, nil
}

func (m *meter) Int64UpDownCounter(name string, _ ...metric.Int64UpDownCounterOption) (metric.Int64UpDownCounter, error) {
	return &instrument[int64]{p: m.p, name: name, kind: Sum}, nil
}

func (m *meter) Int64Histogram(name string, _ ...metric.Int64HistogramOption) (metric.Int64Histogram, error) {
	return &instrument[int64]{p: m.p, name: name, kind: Histogram}, nil
}

func (m *meter) Int64Gauge(name string, _ ...metric.Int64GaugeOption) (metric.Int64Gauge, error) {
	return &instrument[int64]{p: m.p, name: name, kind: Gauge}, nil
}

func (m *meter) Float64Counter(name string, _ ...metric.Float64CounterOption) (metric.Float64Counter, error) {
	return &instrument[float64]{p: m.p, name: name, kind: Sum}, nil
}

func (m *meter) Float64UpDownCounter(name string, _ ...metric.Float64UpDownCounterOption) (metric.Float64UpDownCounter, error) {
	return &instrument[float64]{p: m.p, name: name, kind: Sum}, nil
}

func (m *meter) Float64Histogram(name string, _ ...metric.Float64HistogramOption) (metric.Float64Histogram, error) {
	return &instrument[float64]{p: m.p, name: name, kind: Histogram}, nil
}

func (m *meter) Float64Gauge(name string, _ ...metric.Float64GaugeOption) (metric.Float64Gauge, error) {
	return &instrument[float64]{p: m.p, name: name, kind: Gauge}, nil
}

// int64Observable is an observable int64 instrument of any kind. The
// embedded metric.Int64Observable is nil: it only supplies the API's
// unexported marker methods.
type int64Observable struct {
	metric.Int64Observable
	embedded.Int64ObservableCounter
	embedded.Int64ObservableUpDownCounter
	embedded.Int64ObservableGauge
	name string
	kind Kind
}

// float64Observable is int64Observable for float64 values.
type float64Observable struct {
	metric.Float64Observable
	embedded.Float64ObservableCounter
	embedded.Float64ObservableUpDownCounter
	embedded.Float64ObservableGauge
	name string
	kind Kind
}

type int64Observer struct {
	embedded.Int64Observer
	o    *observation
	inst *int64Observable
}

func (r int64Observer) Observe(v int64, opts ...metric.ObserveOption) {
	observe(r.o, r.inst.name, r.inst.kind, v, opts)
}

type float64Observer struct {
	embedded.Float64Observer
	o    *observation
	inst *float64Observable
}

func (r float64Observer) Observe(v float64, opts ...metric.ObserveOption) {
	observe(r.o, r.inst.name, r.inst.kind, v, opts)
}

func (m *meter) int64Observable(name string, kind Kind, cbs []metric.Int64Callback) *int64Observable {
	inst := &int64Observable{name: name, kind: kind}
	for _, f := range cbs {
		m.p.register(&callback{run: func(ctx context.Context, o *observation) error {
			return f(ctx, int64Observer{o: o, inst: inst})
		}})
	}
	return inst
}

func (m *meter) float64Observable(name string, kind Kind, cbs []metric.Float64Callback) *float64Observable {
	inst := &float64Observable{name: name, kind: kind}
	for _, f := range cbs {
		m.p.register(&callback{run: func(ctx context.Context, o *observation) error {
			return f(ctx, float64Observer{o: o, inst: inst})
		}})
	}
	return inst
}

func (m *meter) Int64ObservableCounter(name string, opts ...metric.Int64ObservableCounterOption) (metric.Int64ObservableCounter, error) {
	return m.int64Observable(name, Sum, metric.NewInt64ObservableCounterConfig(opts...).Callbacks()), nil
}

func (m *meter) Int64ObservableUpDownCounter(name string, opts ...metric.Int64ObservableUpDownCounterOption) (metric.Int64ObservableUpDownCounter, error) {
	return m.int64Observable(name, Sum, metric.NewInt64ObservableUpDownCounterConfig(opts...).Callbacks()), nil
}

func (m *meter) Int64ObservableGauge(name string, opts ...metric.Int64ObservableGaugeOption) (metric.Int64ObservableGauge, error) {
	return m.int64Observable(name, Gauge, metric.NewInt64ObservableGaugeConfig(opts...).Callbacks()), nil
}

func (m *meter) Float64ObservableCounter(name string, opts ...metric.Float64ObservableCounterOption) (metric.Float64ObservableCounter, error) {
	return m.float64Observable(name, Sum, metric.NewFloat64ObservableCounterConfig(opts...).Callbacks()), nil
}

func (m *meter) Float64ObservableUpDownCounter(name string, opts ...metric.Float64ObservableUpDownCounterOption) (metric.Float64ObservableUpDownCounter, error) {
	return m.float64Observable(name, Sum, metric.NewFloat64ObservableUpDownCounterConfig(opts...).Callbacks()), nil
}

func (m *meter) Float64ObservableGauge(name string, opts ...metric.Float64ObservableGaugeOption) (metric.Float64ObservableGauge, error) {
	return m.float64Observable(name, Gauge, metric.NewFloat64ObservableGaugeConfig(opts...).Callbacks()), nil
}

// observer is what a callback given to RegisterCallback observes through.
type observer struct {
	embedded.Observer
	o *observation
}

func (r observer) ObserveInt64(inst metric.Int64Observable, v int64, opts ...metric.ObserveOption) {
	if i, ok := inst.(*int64Observable); ok {
		observe(r.o, i.name, i.kind, v, opts)
	}
}

func (r observer) ObserveFloat64(inst metric.Float64Observable, v float64, opts ...metric.ObserveOption) {
	if i, ok := inst.(*float64Observable); ok {
		observe(r.o, i.name, i.kind, v, opts)
	}
}

func (m *meter) RegisterCallback(f metric.Callback, _ ...metric.Observable) (metric.Registration, error) {
	return m.p.register(&callback{run: func(ctx context.Context, o *observation) error {
		return f(ctx, observer{o: o})
	}}), nil
}

var (
	_ metric.MeterProvider = (*Provider)(nil)
	_ metric.Meter         = (*meter)(nil)
)
