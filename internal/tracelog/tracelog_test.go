package tracelog

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestTraceIDs(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil))).With("group", "g")
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3},
		SpanID:     trace.SpanID{4, 5, 6},
		TraceFlags: trace.FlagsSampled,
	})
	l.InfoContext(trace.ContextWithSpanContext(context.Background(), sc), "in a span")
	l.InfoContext(context.Background(), "outside")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("logged %q", buf.String())
	}
	want := "group=g trace_id=" + sc.TraceID().String() + " span_id=" + sc.SpanID().String()
	if !strings.Contains(lines[0], want) {
		t.Errorf("record in a span: %q, want it to contain %q", lines[0], want)
	}
	if strings.Contains(lines[1], "trace_id") {
		t.Errorf("record outside a span: %q has a trace_id", lines[1])
	}
	if New(l) != l {
		t.Error("New wraps a logger it already wrapped")
	}
}
