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
)

// Telemetry serves a program's OpenTelemetry metrics in Prometheus format
// at /metrics, and /healthz, on METRICS_ADDR (for example ":9090"). Without
// METRICS_ADDR it serves nothing and its MeterProvider is a no-op.
type Telemetry struct {
	// MeterProvider goes into consumer.Config and outbox.RelayConfig.
	MeterProvider metric.MeterProvider
	// Addr is the address served, once started.
	Addr   string
	server *http.Server
	done   chan struct{}
}

// StartTelemetry starts serving when METRICS_ADDR is set. Close stops it.
func StartTelemetry(log *slog.Logger) (*Telemetry, error) {
	t := &Telemetry{MeterProvider: noop.NewMeterProvider()}
	addr := os.Getenv("METRICS_ADDR")
	if addr == "" {
		return t, nil
	}
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, err
	}
	t.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	t.Addr = ln.Addr().String()
	t.server = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	t.done = make(chan struct{})
	go func() {
		defer close(t.done)
		if err := t.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server failed", "err", err)
		}
	}()
	log.Info("serving metrics", "addr", ln.Addr().String())
	return t, nil
}

// Close stops the metrics server and waits for it.
func (t *Telemetry) Close() {
	if t.server == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = t.server.Shutdown(ctx)
	<-t.done
}
