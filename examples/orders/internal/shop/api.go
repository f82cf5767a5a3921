package shop

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactlyhq/exactly/idempotency"
	"github.com/exactlyhq/exactly/outbox"
)

// Limits of an order request.
const (
	MaxAmountCents   = 100_000_000 // one million in cents
	MaxNameLen       = 100         // customer and sku
	maxOrderBodySize = 64 << 10
)

// CustomerHeader names the caller. A real API would take it from an
// authenticated session; the idempotency middleware scopes keys by it, so
// one customer can neither replay nor block another's key.
const CustomerHeader = "X-Customer"

// InFlightWait is how long a repeat of a request that is still running
// (a double click) waits for the first one before it is answered 409.
const InFlightWait = 5 * time.Second

// API serves the shop's HTTP API:
//
//	POST /orders       place an order (Idempotency-Key and X-Customer headers required)
//	GET  /orders/{id}  the order and its state
//	GET  /healthz      200 when Postgres answers
type API struct {
	names Names
	pool  *pgxpool.Pool
	ob    *outbox.Outbox
	log   *slog.Logger
	mux   *http.ServeMux
}

// NewAPI returns the API. Its tables must exist (Setup). With a
// TracerProvider, each POST /orders is a span of the idempotency middleware
// ("POST /orders", with the Idempotency-Key) with the outbox's "create"
// span of its OrderPlaced under it; nil starts no span.
func NewAPI(pool *pgxpool.Pool, names Names, log *slog.Logger, tp trace.TracerProvider) (*API, error) {
	obCfg := names.Outbox()
	obCfg.TracerProvider = tp
	ob, err := outbox.New(obCfg)
	if err != nil {
		return nil, err
	}
	mw, err := idempotency.New(idempotency.Config{
		Pool:  pool,
		Inbox: names.HTTPKeys(),
		Caller: func(r *http.Request) (string, error) {
			if c := strings.TrimSpace(r.Header.Get(CustomerHeader)); c != "" {
				return c, nil
			}
			return "", errors.New("no " + CustomerHeader)
		},
		InFlightWait:   InFlightWait,
		Logger:         log,
		TracerProvider: tp,
	})
	if err != nil {
		return nil, err
	}
	a := &API{names: names, pool: pool, ob: ob, log: log, mux: http.NewServeMux()}
	// Validation runs before the idempotency middleware: a request that is
	// refused never reaches the database and does not use up its key, the
	// way Stripe stores results only for requests that started executing.
	a.mux.Handle("POST /orders", a.validateOrder(mw.Wrap(http.HandlerFunc(a.createOrder))))
	a.mux.HandleFunc("GET /orders/{id}", a.getOrder)
	a.mux.HandleFunc("GET /healthz", a.health)
	return a, nil
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// OrderRequest is the body of POST /orders.
type OrderRequest struct {
	Customer    string `json:"customer"`
	SKU         string `json:"sku"`
	AmountCents int    `json:"amount_cents"`
}

type orderRequestKey struct{}

// ParseOrderRequest decodes and validates the body of POST /orders. Its
// error is a message for the client, naming every problem found.
func ParseOrderRequest(body []byte) (OrderRequest, error) {
	var raw struct {
		Customer    *string         `json:"customer"`
		SKU         *string         `json:"sku"`
		AmountCents json.RawMessage `json:"amount_cents"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return OrderRequest{}, errors.New(`empty body: want a JSON object {"customer", "sku", "amount_cents"}`)
		}
		return OrderRequest{}, fmt.Errorf("invalid JSON body: %v", strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return OrderRequest{}, errors.New("invalid JSON body: unexpected data after the object")
	}
	var req OrderRequest
	var problems []string
	text := func(name string, v *string, dst *string) {
		switch {
		case v == nil:
			problems = append(problems, name+" is required")
		case strings.TrimSpace(*v) == "":
			problems = append(problems, name+" must not be blank")
		case len(*v) > MaxNameLen:
			problems = append(problems, fmt.Sprintf("%s must be at most %d bytes", name, MaxNameLen))
		default:
			*dst = strings.TrimSpace(*v)
		}
	}
	text("customer", raw.Customer, &req.Customer)
	text("sku", raw.SKU, &req.SKU)
	amount := strings.TrimSpace(string(raw.AmountCents))
	switch n, err := strconv.ParseInt(amount, 10, 64); {
	case amount == "" || amount == "null":
		problems = append(problems, "amount_cents is required")
	case err != nil:
		problems = append(problems, fmt.Sprintf("amount_cents must be an integer number of cents, got %s", amount))
	case n <= 0:
		problems = append(problems, fmt.Sprintf("amount_cents must be positive, got %d", n))
	case n > MaxAmountCents:
		problems = append(problems, fmt.Sprintf("amount_cents must be at most %d, got %d", MaxAmountCents, n))
	default:
		req.AmountCents = int(n)
	}
	if len(problems) > 0 {
		return OrderRequest{}, errors.New(strings.Join(problems, "; "))
	}
	return req, nil
}

func (a *API) validateOrder(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); ct != "" {
			if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
				problem(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json, got "+strconv.Quote(ct))
				return
			}
		}
		customer := strings.TrimSpace(r.Header.Get(CustomerHeader))
		if customer == "" {
			problem(w, http.StatusUnauthorized, "missing "+CustomerHeader+" header: who is placing the order?")
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxOrderBodySize))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				problem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", maxOrderBodySize))
				return
			}
			problem(w, http.StatusBadRequest, "cannot read body: "+err.Error())
			return
		}
		req, err := ParseOrderRequest(body)
		if err != nil {
			problem(w, http.StatusBadRequest, err.Error())
			return
		}
		if req.Customer != customer {
			problem(w, http.StatusForbidden, fmt.Sprintf("%s %q cannot place an order for customer %q", CustomerHeader, customer, req.Customer))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body)) // the middleware fingerprints it
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), orderRequestKey{}, req)))
	})
}

// createOrder runs inside the idempotency middleware's transaction: the
// order, its OrderPlaced event and the stored 201 response commit together,
// or not at all.
func (a *API) createOrder(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	req := ctx.Value(orderRequestKey{}).(OrderRequest)
	tx := idempotency.Tx(ctx)
	id, err := uuid.NewV7() // time-ordered: new orders land at the right edge of the index
	if err != nil {
		a.internal(w, r, "new order id", err)
		return
	}
	o := Order{ID: id.String(), Customer: req.Customer, SKU: req.SKU, AmountCents: req.AmountCents, Status: "placed"}
	err = tx.QueryRow(ctx, `INSERT INTO `+a.names.Table("orders")+` (id, customer, sku, amount_cents, status)
		VALUES ($1, $2, $3, $4, 'placed') RETURNING created_at`, o.ID, o.Customer, o.SKU, o.AmountCents).Scan(&o.CreatedAt)
	if err != nil {
		a.internal(w, r, "insert order", err)
		return
	}
	ev, err := json.Marshal(OrderPlaced{OrderID: o.ID, Customer: o.Customer, SKU: o.SKU, AmountCents: o.AmountCents, PlacedAt: o.CreatedAt})
	if err != nil {
		a.internal(w, r, "encode event", err)
		return
	}
	if _, err := a.ob.EnqueueTx(ctx, tx, outbox.Message{
		Topic:   a.names.OrdersPlaced(),
		Key:     []byte(o.ID),
		Value:   ev,
		Headers: []kafka.Header{{Key: "event-type", Value: []byte("OrderPlaced")}},
	}); err != nil {
		a.internal(w, r, "enqueue OrderPlaced", err)
		return
	}
	w.Header().Set("Location", "/orders/"+o.ID)
	writeJSON(w, http.StatusCreated, o)
}

func (a *API) getOrder(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !isUUID(id) {
		problem(w, http.StatusBadRequest, "order id must be a UUID, got "+strconv.Quote(id))
		return
	}
	var o Order
	err := a.pool.QueryRow(r.Context(), `SELECT o.id::text, o.customer, o.sku, o.amount_cents, o.status, o.created_at, o.paid_at, o.shipped_at,
			(SELECT count(*) FROM `+a.names.Table("payments")+` p WHERE p.order_id = o.id),
			(SELECT count(*) FROM `+a.names.Table("shipments")+` s WHERE s.order_id = o.id)
		FROM `+a.names.Table("orders")+` o WHERE o.id = $1`, id).
		Scan(&o.ID, &o.Customer, &o.SKU, &o.AmountCents, &o.Status, &o.CreatedAt, &o.PaidAt, &o.ShippedAt, &o.Payments, &o.Shipments)
	if errors.Is(err, pgx.ErrNoRows) {
		problem(w, http.StatusNotFound, "no order "+id)
		return
	}
	if err != nil {
		a.internal(w, r, "read order", err)
		return
	}
	writeJSON(w, http.StatusOK, o)
}

func (a *API) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := a.pool.Ping(ctx); err != nil {
		// The error names hosts, users and databases: for the log only.
		a.log.Error("health check: database unavailable", "err", err)
		problem(w, http.StatusServiceUnavailable, "database unavailable")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *API) internal(w http.ResponseWriter, r *http.Request, what string, err error) {
	if r.Context().Err() != nil {
		// The client went away; the transaction rolls back and its retry,
		// with the same key, starts over.
		a.log.Debug(what+" abandoned: client gone", "err", err)
	} else {
		a.log.Error(what+" failed", "err", err, "path", r.URL.Path)
	}
	// A 5xx makes the middleware roll back and forget the key.
	problem(w, http.StatusInternalServerError, "internal error; nothing was done, retry with the same Idempotency-Key")
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
		default:
			return false
		}
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// problem answers an RFC 9457 problem, like the idempotency middleware.
func problem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"status": status, "title": http.StatusText(status), "detail": detail})
}
