package shop

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
)

// tracesEndpoint returns where the program exports its spans: the value of
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT
// (the OTLP exporter reads both itself), or "" when neither is set and the
// program starts no span at all.
func tracesEndpoint() string {
	return cmp.Or(strings.TrimSpace(os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")), strings.TrimSpace(os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")))
}

// startTracing returns a TracerProvider that batches spans to the OTLP/HTTP
// endpoint of tracesEndpoint, or nil without one. The exporter reads the
// other OTEL_EXPORTER_OTLP_* variables (headers, timeout, compression) and
// the provider OTEL_TRACES_SAMPLER and OTEL_BSP_*.
//
// It also sets the global propagator to W3C trace context and baggage: the
// outbox writes what the global propagator writes into each message's
// headers, besides the traceparent it always writes.
func startTracing(ctx context.Context, name string, log *slog.Logger) (*sdktrace.TracerProvider, error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	endpoint := tracesEndpoint()
	if endpoint == "" {
		return nil, nil
	}
	res, err := newResource(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	exporter, err := otlptracehttp.New(ctx) // connects on the first export, not here
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	// Export failures (the collector is down) would otherwise go to the
	// standard library's logger, in another format than ours.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("opentelemetry", "err", err)
	}))
	log.Info("exporting traces over OTLP/HTTP", "endpoint", endpoint)
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res)), nil
}

// newResource describes the program: service.name is name unless
// OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) says
// otherwise, and the host name and process id tell two instances of one
// program apart (two payments-workers).
func newResource(ctx context.Context, name string) (*resource.Resource, error) {
	return resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithProcessPID(),
		resource.WithAttributes(semconv.ServiceName(name)),
		resource.WithFromEnv(), // last: the environment wins
	)
}
