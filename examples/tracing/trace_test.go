package tracing_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/idempotency"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/pgtest"
	"github.com/exactlyhq/exactly/internal/runtest"
	"github.com/exactlyhq/exactly/outbox"
)

// TestOneTrace: a request through the idempotency middleware enqueues a
// message in its transaction; the relay publishes it; a consumer applies
// it, and a second delivery of it is skipped. The spans of all of it form
// one trace: the request's span, the outbox's create span under it, the
// relay's send span under that, and the consumer's handle spans under the
// send span, the handler's ctx carrying its message's span, the duplicate
// marked as skipped.
func TestOneTrace(t *testing.T) {
	ctx := context.Background()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(ctx) })

	pool := pgtest.Pool(t)
	schema := pgtest.Schema(t, pool)
	topic := kafkatest.Topic(t, 1)
	keys := inbox.Config{Schema: schema, Table: "http_keys"}
	obCfg := outbox.Config{Schema: schema, TracerProvider: tp}
	ccfg := consumer.Config{
		Brokers:        kafkatest.Brokers(),
		GroupID:        "trace-" + schema,
		Topics:         []string{topic},
		Pool:           pool,
		Inbox:          inbox.Config{Schema: schema},
		TracerProvider: tp,
	}
	if err := inbox.Migrate(ctx, pool, keys); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Migrate(ctx, pool, obCfg); err != nil {
		t.Fatal(err)
	}
	if err := consumer.Migrate(ctx, pool, ccfg); err != nil {
		t.Fatal(err)
	}

	// The API: POST /orders enqueues OrderPlaced in the request's transaction.
	ob, err := outbox.New(obCfg)
	if err != nil {
		t.Fatal(err)
	}
	mw, err := idempotency.New(idempotency.Config{Pool: pool, Inbox: keys, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	var messageID string
	mux := http.NewServeMux()
	mux.Handle("POST /orders", mw.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ids, err := ob.EnqueueTx(r.Context(), idempotency.Tx(r.Context()), outbox.Message{Topic: topic, Key: []byte("order-1"), Value: []byte(`{"order":"order-1"}`)})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		messageID = ids[0]
		w.WriteHeader(http.StatusCreated)
	})))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	for range 2 { // a double click: the second is replayed
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/orders", strings.NewReader(`{}`))
		req.Header.Set(exactly.Header, "click-1")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("POST /orders: %s", res.Status)
		}
	}

	// A key the middleware refuses is not copied into the span.
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/orders", strings.NewReader(`{}`))
	req.Header.Set(exactly.Header, strings.Repeat("k", 300))
	if res, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else if _ = res.Body.Close(); res.StatusCode != http.StatusBadRequest {
		t.Fatalf("a 300-byte key: %s, want 400", res.Status)
	}

	relay, err := outbox.NewRelay(pool, outbox.RelayConfig{Outbox: obCfg, Brokers: kafkatest.Brokers(), TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	stopRelay := runtest.Background(t, "relay", 30*time.Second, relay.Run)

	handled := make(chan trace.SpanContext, 4)
	c, err := consumer.New(ccfg, consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		handled <- trace.SpanContextFromContext(ctx)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	stopConsumer := runtest.Background(t, "consumer", 30*time.Second, c.Run)
	var inHandler trace.SpanContext
	select {
	case inHandler = <-handled:
	case <-time.After(60 * time.Second):
		t.Fatal("the message did not reach the handler")
	}
	// Kafka delivers it again (a producer retry, a replay): same headers.
	published := kafkatest.ReadAll(t, topic, 1, 1, 30*time.Second)[0]
	kafkatest.Produce(t, kafkatest.Writer(t, topic), kafka.Message{Key: published.Key, Value: published.Value, Headers: published.Headers})
	waitCommitted(t, ccfg.GroupID, topic, 2)
	stopConsumer()
	stopRelay()
	select {
	case sc := <-handled:
		t.Fatalf("the duplicate reached the handler (span %v)", sc)
	default:
	}

	spans := exp.GetSpans().Snapshots()
	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byName[s.Name()] = append(byName[s.Name()], s)
	}
	one := func(name string, match func(sdktrace.ReadOnlySpan) bool) sdktrace.ReadOnlySpan {
		t.Helper()
		var found []sdktrace.ReadOnlySpan
		for _, s := range byName[name] {
			if match(s) {
				found = append(found, s)
			}
		}
		if len(found) != 1 {
			t.Fatalf("%d spans %q that match, want 1; spans: %v", len(found), name, names(spans))
		}
		return found[0]
	}
	outcome := func(key attribute.Key, want string) func(sdktrace.ReadOnlySpan) bool {
		return func(s sdktrace.ReadOnlySpan) bool { return attr(s, key) == want }
	}
	any := func(sdktrace.ReadOnlySpan) bool { return true }

	request := one("POST /orders", outcome(idempotency.AttrOutcome, "first"))
	replayed := one("POST /orders", outcome(idempotency.AttrOutcome, "replayed"))
	if refused := one("POST /orders", outcome(idempotency.AttrOutcome, "invalid_key")); attr(refused, "exactly.idempotency.key") != "" {
		t.Error("a refused key was copied into the request's span")
	}
	create := one("create "+topic, any)
	send := one("send "+topic, any)
	fresh := one("handle "+topic, outcome(consumer.AttrOutcome, "fresh"))
	dup := one("handle "+topic, outcome(consumer.AttrOutcome, "duplicate"))

	chain := []struct {
		span, parent sdktrace.ReadOnlySpan
		kind         trace.SpanKind
	}{
		{request, nil, trace.SpanKindServer},
		{create, request, trace.SpanKindProducer},
		{send, create, trace.SpanKindProducer},
		{fresh, send, trace.SpanKindConsumer},
		{dup, send, trace.SpanKindConsumer},
	}
	for _, c := range chain {
		if c.span.SpanContext().TraceID() != request.SpanContext().TraceID() {
			t.Errorf("%s is in trace %s, want the request's %s", c.span.Name(), c.span.SpanContext().TraceID(), request.SpanContext().TraceID())
		}
		if c.parent != nil && c.span.Parent().SpanID() != c.parent.SpanContext().SpanID() {
			t.Errorf("%s (%s) has parent %s, want %s", c.span.Name(), attr(c.span, consumer.AttrOutcome), c.span.Parent().SpanID(), c.parent.Name())
		}
		if c.span.SpanKind() != c.kind {
			t.Errorf("%s is a %s span, want %s", c.span.Name(), c.span.SpanKind(), c.kind)
		}
	}
	if replayed.SpanContext().TraceID() == request.SpanContext().TraceID() {
		t.Error("the replayed request shares the first request's trace")
	}
	if inHandler.SpanID() != fresh.SpanContext().SpanID() {
		t.Errorf("the handler's ctx carries span %s, want its message's %s", inHandler.SpanID(), fresh.SpanContext().SpanID())
	}

	want := []struct {
		span  sdktrace.ReadOnlySpan
		attrs map[attribute.Key]string
	}{
		{request, map[attribute.Key]string{"http.request.method": "POST", "http.route": "POST /orders", "http.response.status_code": "201", "exactly.idempotency.key": "click-1"}},
		{create, map[attribute.Key]string{"messaging.system": "kafka", "messaging.operation.type": "create", "messaging.destination.name": topic, "messaging.message.id": messageID}},
		{send, map[attribute.Key]string{"messaging.system": "kafka", "messaging.operation.type": "send", "messaging.destination.name": topic, "messaging.message.id": messageID}},
		{fresh, map[attribute.Key]string{"messaging.system": "kafka", "messaging.operation.type": "process", "messaging.destination.name": topic,
			"messaging.destination.partition.id": "0", "messaging.kafka.offset": "0", "messaging.consumer.group.name": ccfg.GroupID,
			"messaging.message.id": messageID, "messaging.kafka.message.key": "order-1", "exactly.attempt": "1"}},
		{dup, map[attribute.Key]string{"messaging.kafka.offset": "1", "messaging.message.id": messageID}},
	}
	for _, w := range want {
		s := w.span
		for k, v := range w.attrs {
			if got := attr(s, k); got != v {
				t.Errorf("%s (%s): %s = %q, want %q", s.Name(), attr(s, consumer.AttrOutcome), k, got, v)
			}
		}
	}
	if !hasEvent(dup, consumer.EventDuplicate) {
		t.Errorf("the duplicate's span has events %v, want %q", dup.Events(), consumer.EventDuplicate)
	}

	// Each transaction attempt has a span linked to its messages' producers.
	linked := 0
	for _, p := range byName["process "+topic] {
		for _, l := range p.Links() {
			if l.SpanContext.SpanID() == send.SpanContext().SpanID() {
				linked++
			}
		}
	}
	if linked != 2 {
		t.Errorf("%d process spans link to the send span, want 2 (the delivery and the duplicate)", linked)
	}
}

func attr(s sdktrace.ReadOnlySpan, key attribute.Key) string {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value.String()
		}
	}
	return ""
}

func hasEvent(s sdktrace.ReadOnlySpan, name string) bool {
	for _, e := range s.Events() {
		if e.Name == name {
			return true
		}
	}
	return false
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name() + "/" + attr(s, consumer.AttrOutcome) + attr(s, idempotency.AttrOutcome)
	}
	return out
}

func waitCommitted(t *testing.T, group, topic string, want int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		offsets, err := kafkatest.Committed(context.Background(), group, topic, 1)
		if err == nil && offsets[0] >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s committed %v (err %v), want %d", group, offsets, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
