package outbox

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
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
