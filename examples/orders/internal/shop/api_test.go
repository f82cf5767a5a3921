package shop_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactlyhq/exactly/examples/orders/internal/shop"
	"github.com/exactlyhq/exactly/internal/pgtest"
)

func TestParseOrderRequest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		body string
		want string // substring of the error; "" for valid
	}{
		{`{"customer":"c1","sku":"mug","amount_cents":1250}`, ""},
		{`  {"customer":" c1 ","sku":"mug","amount_cents":1} `, ""},
		{``, "empty body"},
		{`{`, "invalid JSON body"},
		{`[1,2]`, "invalid JSON body"},
		{`{"customer":"c1","sku":"mug","amount_cents":1}{}`, "unexpected data after the object"},
		{`{"customer":"c1","sku":"mug","amount_cents":1,"coupon":"x"}`, `unknown field "coupon"`},
		{`{}`, "customer is required; sku is required; amount_cents is required"},
		{`{"customer":null,"sku":"mug","amount_cents":1}`, "customer is required"},
		{`{"customer":"  ","sku":"mug","amount_cents":1}`, "customer must not be blank"},
		{`{"customer":"c1","sku":"","amount_cents":1}`, "sku must not be blank"},
		{`{"customer":"c1","sku":"` + strings.Repeat("x", shop.MaxNameLen+1) + `","amount_cents":1}`, "sku must be at most"},
		{`{"customer":"c1","sku":"mug","amount_cents":0}`, "amount_cents must be positive, got 0"},
		{`{"customer":"c1","sku":"mug","amount_cents":-5}`, "amount_cents must be positive, got -5"},
		{`{"customer":"c1","sku":"mug","amount_cents":12.5}`, "amount_cents must be an integer number of cents, got 12.5"},
		{`{"customer":"c1","sku":"mug","amount_cents":"100"}`, `amount_cents must be an integer number of cents, got "100"`},
		{`{"customer":"c1","sku":"mug","amount_cents":null}`, "amount_cents is required"},
		{`{"customer":"c1","sku":"mug","amount_cents":100000001}`, "amount_cents must be at most 100000000"},
		{`{"customer":"c1","sku":"mug","amount_cents":99999999999999999999}`, "amount_cents must be an integer number of cents"},
		{`{"customer":1,"sku":"mug","amount_cents":1}`, "invalid JSON body"},
	} {
		req, err := shop.ParseOrderRequest([]byte(tc.body))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tc.body, err)
		case tc.want == "" && (req.Customer != "c1" || req.SKU != "mug" || req.AmountCents <= 0):
			t.Errorf("%s: parsed %+v", tc.body, req)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want one containing %q", tc.body, err, tc.want)
		}
	}
}

// apiFixture serves the API on a fresh schema (no Kafka needed: the API only
// writes the outbox).
type apiFixture struct {
	t     *testing.T
	srv   *httptest.Server
	names shop.Names
	pool  *pgxpool.Pool
	count func(table string) int
}

func newAPI(t *testing.T) *apiFixture { return newTracedAPI(t, nil) }

// newTracedAPI is newAPI with the API's spans going to tp.
func newTracedAPI(t *testing.T, tp trace.TracerProvider) *apiFixture {
	t.Helper()
	pool := pgtest.Pool(t)
	names := shop.Names{Schema: pgtest.Schema(t, pool), TopicPrefix: "apitest."}
	ctx := context.Background()
	if err := names.SetupDB(ctx, pool); err != nil {
		t.Fatal(err)
	}
	api, err := shop.NewAPI(pool, names, slog.New(slog.NewTextHandler(io.Discard, nil)), tp)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return &apiFixture{t: t, srv: srv, names: names, pool: pool, count: func(table string) int {
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+names.Table(table)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}}
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
}

func (f *apiFixture) do(method, path, body string, headers ...string) answer {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header}
	if err := json.Unmarshal(raw, &a.body); err != nil {
		f.t.Fatalf("%s %s: %d with a body that is not a JSON object: %q", method, path, resp.StatusCode, raw)
	}
	return a
}

const validOrder = `{"customer":"alice","sku":"kettle","amount_cents":4599}`

func post(f *apiFixture, key, customer, body string) answer {
	f.t.Helper()
	return f.do(http.MethodPost, "/orders", body, "Idempotency-Key", key, shop.CustomerHeader, customer, "Content-Type", "application/json")
}

func TestAPIPlaceOrderOnce(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	key := uuid.Must(uuid.NewV7()).String()
	first := post(f, key, "alice", validOrder)
	if first.status != http.StatusCreated {
		t.Fatalf("first POST: %d %v", first.status, first.body)
	}
	id, _ := first.body["id"].(string)
	if first.header.Get("Location") != "/orders/"+id || first.body["status"] != "placed" || first.body["amount_cents"] != 4599.0 {
		t.Fatalf("first POST: Location %q, body %v", first.header.Get("Location"), first.body)
	}
	again := post(f, key, "alice", validOrder)
	if again.status != http.StatusCreated || again.body["id"] != id || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("repeat: %d %v replayed=%q, want 201 with id %s, replayed", again.status, again.body, again.header.Get("Idempotent-Replayed"), id)
	}
	if again.header.Get("Location") != "/orders/"+id {
		t.Fatalf("repeat: Location %q", again.header.Get("Location"))
	}
	if n := f.count("orders"); n != 1 {
		t.Fatalf("%d orders after a repeat, want 1", n)
	}
	if n := f.count("outbox"); n != 1 {
		t.Fatalf("%d outbox rows after a repeat, want 1 OrderPlaced", n)
	}
	// The same key with another body is a client bug: 422, nothing new.
	if a := post(f, key, "alice", `{"customer":"alice","sku":"kettle","amount_cents":1}`); a.status != http.StatusUnprocessableEntity {
		t.Fatalf("same key, other body: %d %v, want 422", a.status, a.body)
	}
	// Keys are per customer: bob's request with alice's key is his own.
	bob := post(f, key, "bob", `{"customer":"bob","sku":"kettle","amount_cents":4599}`)
	if bob.status != http.StatusCreated || bob.body["id"] == id {
		t.Fatalf("other customer, same key: %d %v, want a new order", bob.status, bob.body)
	}
	got := f.do(http.MethodGet, "/orders/"+id, "")
	if got.status != http.StatusOK || got.body["id"] != id || got.body["status"] != "placed" || got.body["payments"] != 0.0 {
		t.Fatalf("GET: %d %v", got.status, got.body)
	}
}

func TestAPIDoubleClick(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	key := uuid.Must(uuid.NewV7()).String()
	const clicks = 5
	ids := make([]any, clicks)
	var wg sync.WaitGroup
	for i := range clicks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := post(f, key, "alice", validOrder)
			if a.status != http.StatusCreated {
				t.Errorf("click %d: %d %v", i, a.status, a.body)
			}
			ids[i] = a.body["id"]
		}()
	}
	wg.Wait()
	for i := range ids {
		if ids[i] != ids[0] {
			t.Fatalf("clicks got different orders: %v", ids)
		}
	}
	if n := f.count("orders"); n != 1 {
		t.Fatalf("%d orders after %d simultaneous clicks, want 1", n, clicks)
	}
}

func TestAPIRejects(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	key := uuid.Must(uuid.NewV7()).String()
	for _, tc := range []struct {
		name    string
		body    string
		headers []string
		status  int
		detail  string
	}{
		{"no key", validOrder, []string{shop.CustomerHeader, "alice"}, 400, "missing Idempotency-Key header"},
		{"no customer", validOrder, []string{"Idempotency-Key", key}, 401, "missing X-Customer header"},
		{"other customer", validOrder, []string{"Idempotency-Key", key, shop.CustomerHeader, "mallory"}, 403, `cannot place an order for customer "alice"`},
		{"bad JSON", `{"customer":`, []string{"Idempotency-Key", key, shop.CustomerHeader, "alice"}, 400, "invalid JSON body"},
		{"missing fields", `{"customer":"alice"}`, []string{"Idempotency-Key", key, shop.CustomerHeader, "alice"}, 400, "sku is required; amount_cents is required"},
		{"zero amount", `{"customer":"alice","sku":"mug","amount_cents":0}`, []string{"Idempotency-Key", key, shop.CustomerHeader, "alice"}, 400, "amount_cents must be positive"},
		{"negative amount", `{"customer":"alice","sku":"mug","amount_cents":-1}`, []string{"Idempotency-Key", key, shop.CustomerHeader, "alice"}, 400, "amount_cents must be positive"},
		{"form body", "customer=alice", []string{"Idempotency-Key", key, shop.CustomerHeader, "alice", "Content-Type", "application/x-www-form-urlencoded"}, 415, "Content-Type must be application/json"},
		{"huge body", `{"customer":"alice","sku":"` + strings.Repeat("x", 70<<10) + `","amount_cents":1}`, []string{"Idempotency-Key", key, shop.CustomerHeader, "alice"}, 413, "body larger than"},
	} {
		a := f.do(http.MethodPost, "/orders", tc.body, tc.headers...)
		detail, _ := a.body["detail"].(string)
		if a.status != tc.status || !strings.Contains(detail, tc.detail) {
			t.Errorf("%s: %d %q, want %d with %q", tc.name, a.status, detail, tc.status, tc.detail)
		}
		if ct := a.header.Get("Content-Type"); ct != "application/problem+json" {
			t.Errorf("%s: Content-Type %q", tc.name, ct)
		}
	}
	if n := f.count("orders"); n != 0 {
		t.Fatalf("%d orders after only invalid requests", n)
	}
	// A refused request did not use up its key: fixed, it is placed fresh.
	a := post(f, key, "alice", validOrder)
	if a.status != http.StatusCreated || a.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("valid request after refused ones with its key: %d %v replayed=%q", a.status, a.body, a.header.Get("Idempotent-Replayed"))
	}
	unknown := "/orders/" + uuid.Must(uuid.NewV7()).String()
	for path, want := range map[string]int{
		"/orders/not-a-uuid": 400,
		unknown:              404,
		"/healthz":           200,
	} {
		if a := f.do(http.MethodGet, path, ""); a.status != want {
			t.Errorf("GET %s: %d %v, want %d", path, a.status, a.body, want)
		}
	}
	// Methods the API does not serve.
	req, _ := http.NewRequest(http.MethodDelete, f.srv.URL+"/orders", bytes.NewReader(nil))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("DELETE /orders: %d, want 405", resp.StatusCode)
	}
}

// TestAPIHealthDatabaseDown: /healthz answers 503 with a generic detail and
// logs the database's error, which names hosts and users, instead of sending
// it to the client.
func TestAPIHealthDatabaseDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: every connection is refused
	pool, err := pgxpool.New(context.Background(), "postgres://secret-user:secret-pw@"+addr+"/secret-db?sslmode=disable&connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var logs syncBuffer
	api, err := shop.NewAPI(pool, shop.Names{Schema: "unused", TopicPrefix: "apitest."}, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var p struct{ Detail string }
	if err := json.Unmarshal(raw, &p); err != nil || resp.StatusCode != http.StatusServiceUnavailable || p.Detail != "database unavailable" {
		t.Fatalf("GET /healthz with the database down: %d %s, want 503 \"database unavailable\"", resp.StatusCode, raw)
	}
	for _, secret := range []string{"secret", addr, "refused"} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("the answer %s leaks %q", raw, secret)
		}
	}
	if !strings.Contains(logs.String(), "database unavailable") || !strings.Contains(logs.String(), addr) {
		t.Errorf("the log does not hold the real error: %s", logs.String())
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestAPITraced: with a TracerProvider, a POST /orders is a span with its
// Idempotency-Key, the OrderPlaced it enqueues a "create" span under it, and
// the outbox row's traceparent names that span, so that the relay's and the
// workers' spans join the same trace. A replay is a span of its own and
// enqueues nothing.
func TestAPITraced(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	f := newTracedAPI(t, tp)
	key := uuid.Must(uuid.NewV7()).String()
	for range 2 {
		if a := post(f, key, "alice", validOrder); a.status != http.StatusCreated {
			t.Fatalf("POST: %d %v", a.status, a.body)
		}
	}
	type span struct {
		sdktrace.ReadOnlySpan
		attrs map[string]string
	}
	var requests, creates []span
	for _, s := range rec.Ended() {
		sp := span{s, map[string]string{}}
		for _, kv := range s.Attributes() {
			sp.attrs[string(kv.Key)] = kv.Value.String()
		}
		switch s.Name() {
		case "POST /orders":
			requests = append(requests, sp)
		case "create " + f.names.OrdersPlaced():
			creates = append(creates, sp)
		default:
			t.Errorf("unexpected span %q", s.Name())
		}
	}
	if len(requests) != 2 || len(creates) != 1 {
		t.Fatalf("%d request spans and %d create spans, want 2 and 1", len(requests), len(creates))
	}
	for i, outcome := range []string{"first", "replayed"} {
		r := requests[i]
		if r.SpanKind() != trace.SpanKindServer || r.attrs["exactly.idempotency.key"] != key || r.attrs["exactly.idempotency.outcome"] != outcome {
			t.Errorf("request span %d: kind %v, attributes %v; want a server span with key %s and outcome %s", i, r.SpanKind(), r.attrs, key, outcome)
		}
	}
	c := creates[0]
	if c.Parent().SpanID() != requests[0].SpanContext().SpanID() || c.SpanContext().TraceID() != requests[0].SpanContext().TraceID() {
		t.Errorf("create span's parent %v, want the first request's span %v", c.Parent(), requests[0].SpanContext())
	}
	var messageID, traceparent string
	err := f.pool.QueryRow(context.Background(), `SELECT o.message_id::text, convert_from(decode(h->>'value', 'base64'), 'UTF8')
		FROM `+f.names.Table("outbox")+` o, jsonb_array_elements(o.headers) h WHERE h->>'key' = 'traceparent'`).Scan(&messageID, &traceparent)
	if err != nil {
		t.Fatal(err)
	}
	if c.attrs["messaging.message.id"] != messageID {
		t.Errorf("create span's messaging.message.id %q, want the outbox row's message id %s", c.attrs["messaging.message.id"], messageID)
	}
	want := "00-" + c.SpanContext().TraceID().String() + "-" + c.SpanContext().SpanID().String() + "-01"
	if traceparent != want {
		t.Errorf("outbox row's traceparent %q, want %q (the create span)", traceparent, want)
	}
}
