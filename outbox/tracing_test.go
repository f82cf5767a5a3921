package outbox

import (
	"context"
	"encoding/base64"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

// TestRowTrace: a log line about a row names the trace the row was
// enqueued in, whatever the case of its traceparent header.
func TestRowTrace(t *testing.T) {
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	for _, headers := range []string{
		`[{"key":"traceparent","value":"` + b64(tp) + `"}]`,
		`[{"key":"other","value":""},{"key":"Traceparent","value":"` + b64(tp) + `"}]`,
	} {
		sc := trace.SpanContextFromContext(rowTrace(context.Background(), row{headers: []byte(headers)}))
		if got := sc.TraceID().String(); got != "0af7651916cd43dd8448eb211c80319c" {
			t.Errorf("headers %s: trace %q", headers, got)
		}
	}
	if sc := trace.SpanContextFromContext(rowTrace(context.Background(), row{headers: []byte(`[]`)})); sc.IsValid() {
		t.Errorf("a row without trace context gave %v", sc)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
