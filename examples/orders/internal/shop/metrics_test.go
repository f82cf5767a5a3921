package shop

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/metric"

	"github.com/exactlyhq/exactly/consumer"
)

// TestTelemetry serves metrics in Prometheus format under the names the
// dashboards and alert rules in deploy/monitoring use.
func TestTelemetry(t *testing.T) {
	t.Setenv("METRICS_ADDR", "127.0.0.1:0")
	tel, err := StartTelemetry(slog.New(slog.DiscardHandler))
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
