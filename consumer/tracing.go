package consumer

import (
	"context"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
)

// Spans (only with Config.TracerProvider; without one none of this runs).
//
// Each transaction attempt over a batch is a span "process TOPIC", linked
// to the producer spans of its messages. Each message handled, skipped as a
// duplicate or dead-lettered in it is a span "handle TOPIC" whose parent is
// the producer's span, read from the message's W3C traceparent header (the
// outbox relay writes it), so that one trace runs from the request that
// enqueued a message to the handler that applied it; the handler's ctx
// carries it, so the handler's own spans nest under it.

const instrumentation = "github.com/exactlyhq/exactly/consumer"

// Span attributes of this framework beyond OpenTelemetry's conventions.
const (
	// AttrOutcome is what the inbox said of a message: fresh, duplicate,
	// conflict, or dead_lettered.
	AttrOutcome = attribute.Key("exactly.inbox.outcome")
	// AttrAttempt counts handler invocations for a message, from 1.
	AttrAttempt = attribute.Key("exactly.attempt")
	// AttrDeadLetterReason is the Reason… a message was dead-lettered for.
	AttrDeadLetterReason = attribute.Key("exactly.dead_letter.reason")
)

// Span events.
const (
	// EventDuplicate marks a message the inbox skipped: an earlier
	// delivery of its token committed.
	EventDuplicate = "duplicate skipped"
	// EventDeadLettered marks a message moved to the dead-letter table.
	EventDeadLettered = "dead_lettered"
)

// w3c reads the trace context producers write: the outbox writes W3C trace
// context whatever the global propagator is, so the consumer reads it too.
var w3c = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

type tracer struct {
	t     trace.Tracer
	attrs []attribute.KeyValue // system and group
}

// newTracer returns nil without a TracerProvider: no span is started then.
func newTracer(tp trace.TracerProvider, group string) *tracer {
	if tp == nil {
		return nil
	}
	return &tracer{
		t:     tp.Tracer(instrumentation),
		attrs: []attribute.KeyValue{semconv.MessagingSystemKafka, semconv.MessagingConsumerGroupName(group)},
	}
}

// batch starts the span of one transaction attempt over items. It returns a
// nil span without a tracer.
func (tr *tracer) batch(ctx context.Context, topic string, partition int, items []*item) (context.Context, trace.Span) {
	if tr == nil {
		return ctx, nil
	}
	links := make([]trace.Link, 0, len(items))
	for _, it := range items {
		if sc := trace.SpanContextFromContext(it.producer()); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	attrs := append(tr.attrs[:len(tr.attrs):len(tr.attrs)],
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingOperationName("process"),
		semconv.MessagingDestinationName(topic),
		semconv.MessagingDestinationPartitionID(strconv.Itoa(partition)),
		semconv.MessagingBatchMessageCount(len(items)),
		attribute.Int64("exactly.offset.first", items[0].msg.Offset),
		attribute.Int64("exactly.offset.last", items[len(items)-1].msg.Offset),
	)
	return tr.t.Start(ctx, "process "+topic, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithLinks(links...), trace.WithAttributes(attrs...))
}

// message starts it's span in the attempt whose span is in ctx: a child of
// the producer's span, linked to the attempt's. It returns ctx with the span
// and records the span in it; without a tracer it returns ctx.
func (tr *tracer) message(ctx context.Context, it *item, outcome string) context.Context {
	if tr == nil {
		return ctx
	}
	m := &it.msg
	attrs := append(tr.attrs[:len(tr.attrs):len(tr.attrs)],
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingOperationName("handle"),
		semconv.MessagingDestinationName(m.Topic),
		semconv.MessagingDestinationPartitionID(strconv.Itoa(m.Partition)),
		semconv.MessagingKafkaOffset(int(m.Offset)),
		semconv.MessagingMessageBodySize(len(m.Value)),
		AttrOutcome.String(outcome),
		AttrAttempt.Int(it.attempts+1),
	)
	if !it.token.IsZero() {
		attrs = append(attrs, semconv.MessagingMessageID(it.token.String()))
	}
	if len(m.Key) > 0 && len(m.Key) <= 256 && utf8.Valid(m.Key) {
		attrs = append(attrs, semconv.MessagingKafkaMessageKey(string(m.Key)))
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...)}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
	}
	_, span := tr.t.Start(it.producer(), "handle "+m.Topic, opts...)
	if outcome == "duplicate" {
		span.AddEvent(EventDuplicate)
	}
	it.span = span
	return trace.ContextWithSpan(ctx, span)
}

// endSpan ends it's span, if any, with err (nil: it succeeded).
func (it *item) endSpan(err error) {
	if it.span == nil {
		return
	}
	if err != nil {
		it.span.RecordError(err)
		it.span.SetStatus(codes.Error, err.Error())
	}
	it.span.End()
	it.lastSpan = it.span.SpanContext()
	it.span = nil
}

// endSpans ends the spans of items still open: cause, when not nil, is why
// the transaction they were in did not commit.
func endSpans(items []*item, cause error) {
	for _, it := range items {
		if it.span != nil && cause != nil {
			it.span.AddEvent("rolled back", trace.WithAttributes(attribute.String("exception.message", cause.Error())))
		}
		it.endSpan(nil)
	}
}

// endBatch ends an attempt's span: n messages settled, err why the rest did
// not.
func endBatch(span trace.Span, n int, err error) {
	if span == nil {
		return
	}
	span.SetAttributes(attribute.Int("exactly.settled", n))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// producer returns a context holding the producer's span context from it's
// traceparent header, if any (as a remote parent), read once per message.
func (it *item) producer() context.Context {
	if it.parent == nil {
		it.parent = w3c.Extract(context.Background(), headerCarrier(it.msg.Headers))
	}
	return it.parent
}

// logContext returns ctx with it's last span, for log records about it.
func (it *item) logContext(ctx context.Context) context.Context {
	if it.lastSpan.IsValid() {
		return trace.ContextWithSpanContext(ctx, it.lastSpan)
	}
	return ctx
}

// headerCarrier reads W3C trace context from Kafka headers (the first
// header of a name wins; names compare case-insensitively, as HTTP's do).
type headerCarrier []kafka.Header

func (c headerCarrier) Get(key string) string {
	for _, h := range c {
		if strings.EqualFold(h.Key, key) {
			return string(h.Value)
		}
	}
	return ""
}

func (c headerCarrier) Set(string, string) {} // read only

func (c headerCarrier) Keys() []string {
	keys := make([]string, len(c))
	for i, h := range c {
		keys[i] = h.Key
	}
	return keys
}
