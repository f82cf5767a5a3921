package shop

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/exactlyhq/exactly/consumer"
)

// TestTelemetry serves metrics in Prometheus format under the names the
// dashboards and alert rules in deploy/monitoring use.
func TestTelemetry(t *testing.T) {
	t.Setenv("METRICS_ADDR", "127.0.0.1:0")
	tel, err := StartTelemetry("test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Close()
	m := tel.MeterProvider.Meter("test")
	c, _ := m.Int64Counter(consumer.MetricMessages)
	c.Add(context.Background(), 3)
	h, _ := m.Float64Histogram(consumer.MetricBatchDuration, metric.WithUnit("s"))
	h.Record(context.Background(), 0.01)
	for path, want := range map[string][]string{
		"/metrics": {"exactly_consumer_messages_total", "exactly_consumer_batch_duration_seconds_bucket"},
		"/healthz": {"ok"},
	} {
		resp, err := http.Get("http://" + tel.Addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, w := range want {
			if resp.StatusCode != 200 || !strings.Contains(string(body), w) {
				t.Errorf("GET %s: %d, body lacks %q:\n%.2000s", path, resp.StatusCode, w, body)
			}
		}
	}
}

// TestTracingOff: without an OTLP endpoint the TracerProvider is nil, so
// the library starts no span, and W3C trace context is still propagated.
func TestTracingOff(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", " ")
	t.Setenv("METRICS_ADDR", "")
	tel, err := StartTelemetry("test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Close()
	if tel.TracerProvider != nil {
		t.Errorf("TracerProvider %#v without an endpoint, want nil", tel.TracerProvider)
	}
	if fields := otel.GetTextMapPropagator().Fields(); !slices.Contains(fields, "traceparent") || !slices.Contains(fields, "baggage") {
		t.Errorf("global propagator writes %v, want traceparent and baggage", fields)
	}
}

// TestTracingExport: with OTEL_EXPORTER_OTLP_ENDPOINT the program's spans
// reach the collector over OTLP/HTTP by the time Close returns, under the
// program's name as service.name.
func TestTracingExport(t *testing.T) {
	type export struct {
		path, contentType string
		body              []byte
	}
	got := make(chan export, 10)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- export{r.URL.Path, r.Header.Get("Content-Type"), body}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	t.Setenv("OTEL_SERVICE_NAME", "")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "")
	t.Setenv("METRICS_ADDR", "")
	tel, err := StartTelemetry("payments-worker", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if tel.TracerProvider == nil {
		tel.Close()
		t.Fatal("no TracerProvider with OTEL_EXPORTER_OTLP_ENDPOINT set")
	}
	_, span := tel.TracerProvider.Tracer("test").Start(context.Background(), "handle shop.orders.placed")
	span.End()
	tel.Close() // flushes
	select {
	case e := <-got:
		if e.path != "/v1/traces" || e.contentType != "application/x-protobuf" {
			t.Errorf("export to %s as %s, want /v1/traces as application/x-protobuf", e.path, e.contentType)
		}
		for _, want := range []string{"handle shop.orders.placed", "payments-worker"} {
			if !bytes.Contains(e.body, []byte(want)) {
				t.Errorf("exported spans lack %q", want)
			}
		}
	default:
		t.Fatal("Close returned before the span was exported")
	}
}

// TestTracingResource: service.name is the program's unless
// OTEL_SERVICE_NAME says otherwise.
func TestTracingResource(t *testing.T) {
	for _, tc := range []struct{ env, want string }{{"", "relay"}, {"billing-relay", "billing-relay"}} {
		t.Setenv("OTEL_SERVICE_NAME", tc.env)
		t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=demo")
		res, err := newResource(context.Background(), "relay")
		if err != nil {
			t.Fatal(err)
		}
		attrs := map[attribute.Key]string{}
		for _, kv := range res.Attributes() {
			attrs[kv.Key] = kv.Value.String()
		}
		if attrs["service.name"] != tc.want || attrs["deployment.environment.name"] != "demo" || attrs["host.name"] == "" || attrs["process.pid"] == "" {
			t.Errorf("OTEL_SERVICE_NAME=%q: resource %v, want service.name %s, the environment's attribute, host.name and process.pid", tc.env, attrs, tc.want)
		}
	}
}
