package outbox

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/segmentio/kafka-go"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
)

const instrumentation = "github.com/exactlyhq/exactly/outbox"

// AttrMessageIDs lists the ids of the messages one EnqueueTx call enqueued.
const AttrMessageIDs = attribute.Key("exactly.outbox.message_ids")

// startCreate starts the span of an EnqueueTx call, if traced: "create
// TOPIC" (or "create" for messages to several topics).
func (o *Outbox) startCreate(ctx context.Context, msgs []Message) (context.Context, trace.Span) {
	if o.tracer == nil {
		return ctx, nil
	}
	name, topic := "create", msgs[0].Topic
	for _, m := range msgs[1:] {
		if m.Topic != topic {
			topic = ""
			break
		}
	}
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKafka,
		semconv.MessagingOperationTypeCreate,
		semconv.MessagingOperationName("create"),
		semconv.MessagingBatchMessageCount(len(msgs)),
	}
	if topic != "" {
		name += " " + topic
		attrs = append(attrs, semconv.MessagingDestinationName(topic))
	}
	return o.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
}

func (o *Outbox) endCreate(span trace.Span, ids []string, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	if len(ids) == 1 {
		span.SetAttributes(semconv.MessagingMessageID(ids[0]))
	} else if len(ids) > 1 {
		span.SetAttributes(AttrMessageIDs.StringSlice(ids))
	}
	span.End()
}

// startSends starts a span per message about to be published, if traced:
// "send TOPIC", a child of the span the message's traceparent names, which
// the message then names instead (same length: the write's size is
// unchanged). A message enqueued without trace context gets a root span and
// no header.
func (r *Relay) startSends(ctx context.Context, rows []row, msgs []kafka.Message) []trace.Span {
	if r.tracer == nil {
		return nil
	}
	spans := make([]trace.Span, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		parent := propagation.TraceContext{}.Extract(context.WithoutCancel(ctx), headerCarrier{m})
		_, spans[i] = r.tracer.Start(parent, "send "+m.Topic, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
			semconv.MessagingSystemKafka,
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName("send"),
			semconv.MessagingDestinationName(m.Topic),
			semconv.MessagingMessageID(rows[i].messageID),
			semconv.MessagingBatchMessageCount(len(msgs)),
			semconv.MessagingMessageBodySize(len(m.Value)),
		))
		if trace.SpanContextFromContext(parent).IsValid() {
			propagation.TraceContext{}.Inject(trace.ContextWithSpan(parent, spans[i]), headerCarrier{m})
		}
	}
	return spans
}

// endSends ends the send spans with each message's outcome.
func endSends(spans []trace.Span, errs []error) {
	for i, span := range spans {
		if errs[i] != nil {
			span.RecordError(errs[i])
			span.SetStatus(codes.Error, errs[i].Error())
		}
		span.End()
	}
}

// headerCarrier reads and replaces trace context headers of a Kafka
// message: Set replaces the first header of the name (in any case) and
// adds none.
type headerCarrier struct{ m *kafka.Message }

func (c headerCarrier) Get(key string) string {
	for _, h := range c.m.Headers {
		if strings.EqualFold(h.Key, key) {
			return string(h.Value)
		}
	}
	return ""
}

func (c headerCarrier) Set(key, value string) {
	for i, h := range c.m.Headers {
		if strings.EqualFold(h.Key, key) {
			c.m.Headers[i].Value = []byte(value)
			return
		}
	}
}

func (c headerCarrier) Keys() []string {
	keys := make([]string, len(c.m.Headers))
	for i, h := range c.m.Headers {
		keys[i] = h.Key
	}
	return keys
}

// rowTrace returns ctx with the trace context x was enqueued with, if any,
// so that a log line about the row names its trace.
func rowTrace(ctx context.Context, x row) context.Context {
	var hs []header
	if json.Unmarshal(x.headers, &hs) != nil {
		return ctx
	}
	m := kafka.Message{Headers: make([]kafka.Header, len(hs))}
	for i, h := range hs {
		m.Headers[i] = kafka.Header{Key: h.Key, Value: h.Value}
	}
	return propagation.TraceContext{}.Extract(ctx, headerCarrier{&m})
}
