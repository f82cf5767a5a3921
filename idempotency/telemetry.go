package idempotency

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
)

// Metric names. MetricRequests carries "outcome": first (the handler ran
// and its response was stored), replayed, in_flight (409), mismatch (422),
// missing_key (400), invalid_key (400), invalid_request (400, 413, 414),
// unauthenticated (401), handler_error (the handler answered 500 or more;
// rolled back), no_key (Config.Optional without a key), error (500: the
// middleware or the database failed). MetricStoredBytes is the size of
// each response stored for replay.
const (
	MetricRequests    = "exactly.idempotency.requests"
	MetricStoredBytes = "exactly.idempotency.stored_response.size"
)

// AttrOutcome is the span attribute with the request's outcome (the
// values of MetricRequests' "outcome").
const AttrOutcome = attribute.Key("exactly.idempotency.outcome")

// Outcomes of a request.
const (
	outcomeFirst           = "first"
	outcomeReplayed        = "replayed"
	outcomeInFlight        = "in_flight"
	outcomeMismatch        = "mismatch"
	outcomeExpiredKey      = "expired_key"
	outcomeMissingKey      = "missing_key"
	outcomeInvalidKey      = "invalid_key"
	outcomeInvalidRequest  = "invalid_request"
	outcomeUnauthenticated = "unauthenticated"
	outcomeHandlerError    = "handler_error"
	outcomeNoKey           = "no_key"
	outcomeError           = "error"
)

const instrumentation = "github.com/exactlyhq/exactly/idempotency"

// telemetry is the middleware's metrics and spans.
type telemetry struct {
	tracer   trace.Tracer // nil without Config.TracerProvider
	requests metric.Int64Counter
	size     metric.Int64Histogram
	header   string
	maxKey   int
}

func newTelemetry(cfg Config) (*telemetry, error) {
	mp := cfg.MeterProvider
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	meter := mp.Meter(instrumentation)
	t := &telemetry{header: cfg.Header, maxKey: cfg.MaxKeyLen}
	var err error
	if t.requests, err = meter.Int64Counter(MetricRequests, metric.WithDescription("Requests with or without an idempotency key, by outcome.")); err != nil {
		return nil, err
	}
	if t.size, err = meter.Int64Histogram(MetricStoredBytes, metric.WithUnit("By"), metric.WithDescription("Size of each response stored for replay."),
		metric.WithExplicitBucketBoundaries(64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)); err != nil {
		return nil, err
	}
	if cfg.TracerProvider != nil {
		t.tracer = cfg.TracerProvider.Tracer(instrumentation)
	}
	return t, nil
}

// start starts the request's span: a server span continuing the caller's
// W3C trace context, or, under a server span already started in front of
// the middleware (otelhttp), an internal child of it.
func (t *telemetry) start(r *http.Request) (context.Context, trace.Span) {
	ctx := r.Context()
	if t.tracer == nil {
		return ctx, nil
	}
	kind := trace.SpanKindInternal
	if !trace.SpanContextFromContext(ctx).IsValid() {
		kind = trace.SpanKindServer
		ctx = propagation.TraceContext{}.Extract(ctx, propagation.HeaderCarrier(r.Header))
	}
	name := r.Method
	if r.Pattern != "" {
		name = r.Pattern // "POST /orders" already names its method
	}
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(r.Method),
		semconv.URLPath(r.URL.Path),
	}
	if r.Pattern != "" {
		attrs = append(attrs, semconv.HTTPRoute(r.Pattern))
	}
	// The key as an attribute only when it is one the middleware accepts:
	// a client's header may be anything up to the server's header limit.
	if keys := r.Header.Values(t.header); len(keys) == 1 && len(keys[0]) <= t.maxKey && printable(keys[0]) {
		attrs = append(attrs, attribute.String("exactly.idempotency.key", keys[0]))
	}
	return t.tracer.Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// finish counts the request and ends its span.
func (t *telemetry) finish(ctx context.Context, span trace.Span, outcome string, status int) {
	t.requests.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", outcome)))
	if span == nil {
		return
	}
	span.SetAttributes(AttrOutcome.String(outcome), semconv.HTTPResponseStatusCode(status))
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	if outcome == outcomeReplayed {
		span.AddEvent("replayed: the stored response of the first request with this key")
	}
	span.End()
}

func (t *telemetry) stored(ctx context.Context, n int) {
	t.size.Record(ctx, int64(n))
}

// statusWriter remembers the status a response was sent with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the writer underneath.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
