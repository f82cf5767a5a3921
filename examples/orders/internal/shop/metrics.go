package shop

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Telemetry is a program's OpenTelemetry set-up. It serves the program's
// metrics in Prometheus format at /metrics, and /healthz, on METRICS_ADDR
// (for example ":9090"); without METRICS_ADDR it serves nothing and its
// MeterProvider is a no-op. It exports the program's spans over OTLP/HTTP
// when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
// is set; without either its TracerProvider is nil.
type Telemetry struct {
	// MeterProvider goes into consumer.Config and outbox.RelayConfig.
	MeterProvider metric.MeterProvider
	// TracerProvider goes into every library Config of the program:
	// idempotency.Config and outbox.Config in the API, consumer.Config and
	// outbox.Config in the workers, outbox.RelayConfig in the relay. Nil
	// (no spans) without an OTLP endpoint.
	TracerProvider trace.TracerProvider
	// Addr is the metrics address served, once started.
	Addr    string
	server  *http.Server
	done    chan struct{}
	tracing *sdktrace.TracerProvider // nil without an OTLP endpoint
	log     *slog.Logger
}

// StartTelemetry starts exporting spans when an OTLP endpoint is set, with
// service.name name unless OTEL_SERVICE_NAME is set, and serving metrics
// when METRICS_ADDR is set. Close stops both.
func StartTelemetry(name string, log *slog.Logger) (*Telemetry, error) {
	t := &Telemetry{MeterProvider: noop.NewMeterProvider(), log: log}
	tp, err := startTracing(context.Background(), name, log)
	if err != nil {
		return nil, err
	}
	if tp != nil { // never a nil *sdktrace.TracerProvider in the interface
		t.tracing, t.TracerProvider = tp, tp
	}
	if err := t.serveMetrics(); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

func (t *Telemetry) serveMetrics() error {
	addr := os.Getenv("METRICS_ADDR")
	if addr == "" {
		return nil
	}
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return err
	}
	t.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	t.Addr = ln.Addr().String()
	t.server = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	t.done = make(chan struct{})
	go func() {
		defer close(t.done)
		if err := t.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.log.Error("metrics server failed", "err", err)
		}
	}()
	t.log.Info("serving metrics", "addr", ln.Addr().String())
	return nil
}

// Close flushes the spans not yet exported and stops exporting, stops the
// metrics server, and waits for both (at most 5 seconds).
func (t *Telemetry) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if t.tracing != nil {
		if err := t.tracing.Shutdown(ctx); err != nil {
			t.log.Warn("flushing spans failed; some are lost", "err", err)
		}
	}
	if t.server != nil {
		_ = t.server.Shutdown(ctx)
		<-t.done
	}
}
