package idempotency

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/tracelog"
)

// Defaults of Config.
const (
	MaxKeyLenDefault        = 255
	MaxPathLenDefault       = 1024
	MaxBodyBytesDefault     = 1 << 20
	MaxResponseBytesDefault = 1 << 20
	InFlightWaitDefault     = 0
)

// ReplayedHeader marks a response replayed from the store.
const ReplayedHeader = "Idempotent-Replayed"

// maxKeyEntry is the most bytes of scope and stored token one entry of the
// inbox's primary key (scope, token) holds. Postgres refuses b-tree entries
// over 2704 bytes with 8 kB pages, headers and alignment included; a scope
// and token of 2685 bytes together that do not compress were measured to
// fit. A stored token is the key and one kind byte.
const maxKeyEntry = 2640

// methodAndCallerRoom is the part of a scope MaxPathLen leaves to the
// method, the separators and the caller.
const methodAndCallerRoom = 256

// Config configures a Middleware. Pool is required.
type Config struct {
	// Pool runs each request's transaction.
	Pool *pgxpool.Pool
	// Inbox names the table that stores keys and responses. Its Scope is
	// ignored: each key is scoped by endpoint and caller.
	Inbox inbox.Config
	// Header carries the key. Defaults to [exactly.Header],
	// "Idempotency-Key".
	Header string
	// Optional lets requests without a key through, each in a transaction
	// of its own with no replay protection. Defaults to false: a missing key
	// is answered 400.
	Optional bool
	// Caller returns the authenticated caller of a request, so that one
	// caller can neither replay nor block another's keys. An error answers
	// 401. Defaults to every request being the same caller.
	Caller func(*http.Request) (string, error)
	// Endpoint names the operation a key belongs to. Defaults to the method
	// and the route pattern (r.Pattern), or the path when there is none.
	Endpoint func(*http.Request) string
	// InFlightWait is how long a repeat waits for the first request with
	// its key to finish before it is answered 409 Conflict. Defaults to 0:
	// answer 409 at once.
	InFlightWait time.Duration
	// MaxKeyLen is the longest key accepted, in bytes. Defaults to 255.
	MaxKeyLen int
	// MaxPathLen is the longest request path accepted with a key, in bytes
	// (after percent-decoding); a longer one is answered 414 URI Too Long.
	// A path that is not UTF-8 text or holds control characters (%00, %FF,
	// %0A, ...) is answered 400. Without a route pattern the path is part
	// of each key's scope, and a scope is stored in an index entry of
	// bounded size: MaxPathLen can be at most 2383 - MaxKeyLen. Defaults
	// to 1024.
	MaxPathLen int
	// MaxBodyBytes is the largest request body accepted (413 above it).
	// Defaults to 1 MiB.
	MaxBodyBytes int64
	// MaxResponseBytes is the largest response that can be stored for
	// replay; a handler that writes more is rolled back and answered 500.
	// Defaults to 1 MiB.
	MaxResponseBytes int
	// StoredHeaders are the response headers stored and replayed. Defaults
	// to Content-Type and Location.
	StoredHeaders []string
	// Logger receives errors. Defaults to slog.Default().
	Logger *slog.Logger
	// MeterProvider receives metrics (MetricRequests, MetricStoredBytes).
	// Defaults to a no-op provider.
	MeterProvider metric.MeterProvider
	// TracerProvider receives a span per request (continuing the caller's
	// W3C traceparent, or a child of a server span started in front of the
	// middleware), with the outcome and the key; the handler's ctx carries
	// it, so an outbox.EnqueueTx there carries the trace on to Kafka. Nil
	// (the default): no spans.
	TracerProvider trace.TracerProvider
}

// Middleware makes HTTP handlers idempotent per key, endpoint and caller.
//
// The first request with a key runs the handler inside a transaction
// (reach it with Tx); its response, if below 500, is stored in the same
// transaction and committed with the handler's writes. A repeat gets the
// stored response, marked with the Idempotent-Replayed header. A repeat
// with a different body is answered 422; a repeat while the first is still
// running, 409 (or it waits, see Config.InFlightWait). A handler that
// answers 500 or more, panics, or writes too much leaves nothing behind: a
// retry runs it again.
type Middleware struct {
	cfg   Config
	store *inbox.Store
	tel   *telemetry
}

// New returns a Middleware. It does not touch the database; create the
// table with inbox.Migrate(ctx, pool, cfg.Inbox).
func New(cfg Config) (*Middleware, error) {
	if cfg.Pool == nil {
		return nil, errors.New("idempotency: Config.Pool: required")
	}
	cfg.Header = cmp.Or(cfg.Header, exactly.Header)
	cfg.MaxKeyLen = cmp.Or(cfg.MaxKeyLen, MaxKeyLenDefault)
	cfg.MaxPathLen = cmp.Or(cfg.MaxPathLen, MaxPathLenDefault)
	cfg.MaxBodyBytes = cmp.Or(cfg.MaxBodyBytes, MaxBodyBytesDefault)
	cfg.MaxResponseBytes = cmp.Or(cfg.MaxResponseBytes, MaxResponseBytesDefault)
	if cfg.StoredHeaders == nil {
		cfg.StoredHeaders = []string{"Content-Type", "Location"}
	}
	if cfg.Caller == nil {
		cfg.Caller = func(*http.Request) (string, error) { return "", nil }
	}
	if cfg.Endpoint == nil {
		cfg.Endpoint = func(r *http.Request) string {
			if r.Pattern != "" {
				return r.Pattern
			}
			return r.Method + " " + r.URL.Path
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = tracelog.New(cfg.Logger)
	switch {
	case cfg.MaxKeyLen < 1 || cfg.MaxKeyLen > inbox.MaxTokenLen:
		return nil, fmt.Errorf("idempotency: Config.MaxKeyLen: %d is not in 1..%d", cfg.MaxKeyLen, inbox.MaxTokenLen)
	case cfg.MaxPathLen < 1 || cfg.MaxPathLen > maxScopeLen(cfg)-methodAndCallerRoom:
		return nil, fmt.Errorf("idempotency: Config.MaxPathLen: %d is not in 1..%d (what a key's scope leaves to the path with MaxKeyLen %d)",
			cfg.MaxPathLen, maxScopeLen(cfg)-methodAndCallerRoom, cfg.MaxKeyLen)
	case cfg.MaxBodyBytes < 1:
		return nil, fmt.Errorf("idempotency: Config.MaxBodyBytes: must be positive, got %d", cfg.MaxBodyBytes)
	case cfg.MaxResponseBytes < 1:
		return nil, fmt.Errorf("idempotency: Config.MaxResponseBytes: must be positive, got %d", cfg.MaxResponseBytes)
	case cfg.InFlightWait < 0:
		return nil, fmt.Errorf("idempotency: Config.InFlightWait: negative duration %v", cfg.InFlightWait)
	}
	store, err := inbox.New(cfg.Pool, cfg.Inbox)
	if err != nil {
		return nil, fmt.Errorf("idempotency: %w", err)
	}
	tel, err := newTelemetry(cfg)
	if err != nil {
		return nil, fmt.Errorf("idempotency: metrics: %w", err)
	}
	return &Middleware{cfg: cfg, store: store, tel: tel}, nil
}

type txKey struct{}

// Tx returns the transaction of the request being handled, or nil outside
// a Middleware. Write through it: its writes commit with the stored
// response, or not at all.
func Tx(ctx context.Context) pgx.Tx {
	tx, _ := ctx.Value(txKey{}).(pgx.Tx)
	return tx
}

// stored is the response kept for replay.
type stored struct {
	Status  int                 `json:"status"`
	Headers map[string][]string `json:"headers,omitempty"`
	Body    []byte              `json:"body"`
}

// maxScopeLen is the longest scope that fits in an index entry beside the
// longest key cfg accepts.
func maxScopeLen(cfg Config) int { return maxKeyEntry - (cfg.MaxKeyLen + 1) }

// Wrap returns h made idempotent.
func (m *Middleware) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, span := m.tel.start(r)
		sw := &statusWriter{ResponseWriter: w}
		outcome := m.handle(sw, r.WithContext(ctx), h)
		m.tel.finish(ctx, span, outcome, cmp.Or(sw.status, http.StatusOK))
	})
}

// handle answers r and returns what became of it (outcome…).
func (m *Middleware) handle(w http.ResponseWriter, r *http.Request, h http.Handler) string {
	keys := r.Header.Values(m.cfg.Header)
	if len(keys) > 1 {
		problem(w, http.StatusBadRequest, fmt.Sprintf("ambiguous %s: the request has %d %s headers; send exactly one", m.cfg.Header, len(keys), m.cfg.Header))
		return outcomeInvalidKey
	}
	var key string
	if len(keys) == 1 {
		key = keys[0]
	}
	if key == "" && m.cfg.Optional {
		return m.serveWithoutKey(w, r, h)
	}
	if key == "" {
		problem(w, http.StatusBadRequest, "missing "+m.cfg.Header+" header")
		return outcomeMissingKey
	}
	if len(key) > m.cfg.MaxKeyLen || !printable(key) {
		problem(w, http.StatusBadRequest, fmt.Sprintf("%s must be 1 to %d printable ASCII characters", m.cfg.Header, m.cfg.MaxKeyLen))
		return outcomeInvalidKey
	}
	tok, err := inbox.ParseToken(key)
	if err != nil {
		problem(w, http.StatusBadRequest, err.Error())
		return outcomeInvalidKey
	}
	// The path goes into the key's scope (a text column, part of an
	// index) when the route has no pattern.
	if len(r.URL.Path) > m.cfg.MaxPathLen {
		problem(w, http.StatusRequestURITooLong, fmt.Sprintf("the request path is longer than %d bytes", m.cfg.MaxPathLen))
		return outcomeInvalidRequest
	}
	if !isText(r.URL.Path, true) {
		problem(w, http.StatusBadRequest, "the request path must be UTF-8 text without control characters (such as %00 or %0A)")
		return outcomeInvalidRequest
	}
	caller, err := m.cfg.Caller(r)
	if err != nil {
		problem(w, http.StatusUnauthorized, "unauthenticated")
		return outcomeUnauthenticated
	}
	// The scope keeps keys of different endpoints and callers apart. An
	// endpoint has no newline, so the first one separates the two.
	endpoint := m.cfg.Endpoint(r)
	switch {
	case !isText(endpoint, false) || strings.Contains(endpoint, "\n"):
		problem(w, http.StatusBadRequest, "the request's method and path must be UTF-8 text without NUL or line breaks")
		return outcomeInvalidRequest
	case !isText(caller, false):
		problem(w, http.StatusBadRequest, "the caller's identity must be UTF-8 text without NUL")
		return outcomeInvalidRequest
	case len(endpoint)+1+len(caller) > maxScopeLen(m.cfg):
		problem(w, http.StatusBadRequest, fmt.Sprintf("the request's method and path (%d bytes) and the caller's identity (%d bytes) are too long to store with a key: at most %d bytes together",
			len(endpoint), len(caller), maxScopeLen(m.cfg)-1))
		return outcomeInvalidRequest
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, m.cfg.MaxBodyBytes+1))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) { // a limit set in front of the middleware
		problem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", tooLarge.Limit))
		return outcomeInvalidRequest
	}
	if err != nil {
		problem(w, http.StatusBadRequest, "cannot read body: "+err.Error())
		return outcomeInvalidRequest
	}
	if int64(len(body)) > m.cfg.MaxBodyBytes {
		problem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", m.cfg.MaxBodyBytes))
		return outcomeInvalidRequest
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	store := m.store.WithScope(endpoint + "\n" + caller)
	fp := fingerprint(r, body)
	return m.serve(w, r, h, store, tok, fp)
}

func (m *Middleware) serve(w http.ResponseWriter, r *http.Request, h http.Handler, store *inbox.Store, tok inbox.Token, fp []byte) string {
	ctx := r.Context()
	tx, err := m.cfg.Pool.Begin(ctx)
	if err != nil {
		m.internal(w, r, "begin", err)
		return outcomeError
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	// A claim of a key whose first request is still running waits on the
	// inbox's primary key; lock_timeout bounds that wait.
	wait := max(m.cfg.InFlightWait, time.Millisecond)
	if _, err := tx.Exec(ctx, "SELECT set_config('lock_timeout', $1, true)", strconv.FormatInt(wait.Milliseconds(), 10)+"ms"); err != nil {
		m.internal(w, r, "set lock_timeout", err)
		return outcomeError
	}
	c, err := store.Claim(ctx, tx, inbox.Request{Token: tok, Fingerprint: fp})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55P03" { // lock_not_available
		w.Header().Set("Retry-After", "1")
		problem(w, http.StatusConflict, "a request with this "+m.cfg.Header+" is still being processed")
		return outcomeInFlight
	}
	if err != nil {
		m.internal(w, r, "claim", err)
		return outcomeError
	}
	switch c.Outcome {
	case inbox.Duplicate:
		var s stored
		if err := json.Unmarshal(c.Stored, &s); err != nil {
			m.internal(w, r, "decode stored response", err)
			return outcomeError
		}
		status := s.Status
		if status == 0 {
			// Stored by versions that kept a handler's status as it was
			// when the handler wrote nothing; net/http answered 200.
			status = http.StatusOK
		}
		if status < 100 || status > 999 {
			// Stored by versions that took any WriteHeader code; net/http
			// panicked on it after the commit.
			m.cfg.Logger.ErrorContext(ctx, "idempotency: stored response has an invalid status", "status", s.Status, "endpoint", m.cfg.Endpoint(r))
			problem(w, http.StatusInternalServerError, fmt.Sprintf("the response stored for this %s has an invalid status (%d); the request was carried out", m.cfg.Header, s.Status))
			return outcomeError
		}
		for k, vs := range s.Headers {
			w.Header()[k] = vs
		}
		w.Header().Set(ReplayedHeader, "true")
		w.WriteHeader(status)
		_, _ = w.Write(s.Body)
		return outcomeReplayed
	case inbox.Conflict:
		problem(w, http.StatusUnprocessableEntity, "this "+m.cfg.Header+" was used with a different request")
		return outcomeMismatch
	case inbox.Expired:
		// A partitioned inbox no longer keeps keys this old: the request may
		// have been carried out, and its response is gone.
		problem(w, http.StatusUnprocessableEntity, "this "+m.cfg.Header+" is a UUIDv7 older than the keys kept; it may have been used, so it is refused: send a new key")
		return outcomeExpiredKey
	case inbox.Fresh:
	default:
		m.internal(w, r, "claim", fmt.Errorf("unknown outcome %v", c.Outcome))
		return outcomeError
	}
	if _, err := tx.Exec(ctx, "SELECT set_config('lock_timeout', '0', true)"); err != nil {
		m.internal(w, r, "reset lock_timeout", err)
		return outcomeError
	}
	rec := &recorder{header: http.Header{}, limit: m.cfg.MaxResponseBytes}
	if !m.run(rec, r.WithContext(context.WithValue(ctx, txKey{}, tx)), h) {
		m.internal(w, r, "handler", errors.New("panicked"))
		return outcomeError
	}
	switch {
	case rec.overflow:
		m.cfg.Logger.ErrorContext(ctx, "idempotency: response too large to store; rolled back", "limit", m.cfg.MaxResponseBytes, "endpoint", m.cfg.Endpoint(r))
		problem(w, http.StatusInternalServerError, fmt.Sprintf("response larger than %d bytes cannot be stored for replay; nothing was done", m.cfg.MaxResponseBytes))
		return outcomeError
	case rec.status >= 500:
		rec.flush(w) // rolled back by the deferred Rollback: a retry runs again
		return outcomeHandlerError
	}
	// A handler that wrote nothing was answered 200 by net/http.
	s := stored{Status: cmp.Or(rec.status, http.StatusOK), Headers: map[string][]string{}, Body: rec.body.Bytes()}
	for _, k := range m.cfg.StoredHeaders {
		if vs := rec.header.Values(k); len(vs) > 0 {
			s.Headers[http.CanonicalHeaderKey(k)] = vs
		}
	}
	raw, err := json.Marshal(s)
	if err != nil {
		m.internal(w, r, "encode response", err)
		return outcomeError
	}
	if err := store.SetResult(ctx, tx, tok, raw); err != nil {
		m.internal(w, r, "store response", err)
		return outcomeError
	}
	if err := tx.Commit(ctx); err != nil {
		m.internal(w, r, "commit", err)
		return outcomeError
	}
	m.tel.stored(ctx, len(raw))
	rec.flush(w)
	return outcomeFirst
}

func (m *Middleware) serveWithoutKey(w http.ResponseWriter, r *http.Request, h http.Handler) string {
	ctx := r.Context()
	tx, err := m.cfg.Pool.Begin(ctx)
	if err != nil {
		m.internal(w, r, "begin", err)
		return outcomeError
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	rec := &recorder{header: http.Header{}, limit: int(m.cfg.MaxBodyBytes) + m.cfg.MaxResponseBytes}
	if !m.run(rec, r.WithContext(context.WithValue(ctx, txKey{}, tx)), h) {
		m.internal(w, r, "handler", errors.New("panicked"))
		return outcomeError
	}
	if rec.status >= 500 {
		rec.flush(w) // rolled back
		return outcomeHandlerError
	}
	if err := tx.Commit(ctx); err != nil {
		m.internal(w, r, "commit", err)
		return outcomeError
	}
	rec.flush(w)
	return outcomeNoKey
}

// run calls h and reports false if it panicked.
func (m *Middleware) run(w http.ResponseWriter, r *http.Request, h http.Handler) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			m.cfg.Logger.ErrorContext(r.Context(), "idempotency: handler panicked; rolled back", "panic", v)
			ok = false
		}
	}()
	h.ServeHTTP(w, r)
	return true
}

func (m *Middleware) internal(w http.ResponseWriter, r *http.Request, what string, err error) {
	if r.Context().Err() != nil {
		// The client went away: nobody reads the answer, and the
		// transaction rolled back (or its outcome will be replayed).
		m.cfg.Logger.DebugContext(r.Context(), "idempotency: "+what+" abandoned by the client", "err", err)
	} else {
		m.cfg.Logger.ErrorContext(r.Context(), "idempotency: "+what+" failed", "err", err)
	}
	detail := "internal error; nothing was done, retry with the same key"
	if what == "commit" {
		detail = "internal error; the outcome is unknown, retry with the same key to learn it"
	}
	problem(w, http.StatusInternalServerError, detail)
}

// fingerprint identifies the request a key was first used for.
func fingerprint(r *http.Request, body []byte) []byte {
	h := sha256.New()
	h.Write([]byte(r.Method + " " + r.URL.RequestURI() + "\x00"))
	h.Write(body)
	return h.Sum(nil)[:16]
}

// isText reports whether s is UTF-8 without NUL, and, when noControls, without
// any other control character either.
func isText(s string, noControls bool) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 || noControls && (s[i] < 0x20 || s[i] == 0x7f) {
			return false
		}
	}
	return true
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func problem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"status": status, "title": http.StatusText(status), "detail": detail})
}

// recorder buffers a response so it can be stored before it is sent.
type recorder struct {
	header   http.Header
	status   int
	body     bytes.Buffer
	limit    int
	overflow bool
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if status < 100 || status > 999 {
		// As net/http does; run recovers and rolls back, so the code is
		// never stored.
		panic(fmt.Sprintf("invalid WriteHeader code %v", status))
	}
	if r.status != 0 {
		return
	}
	if status < 200 && status != http.StatusSwitchingProtocols {
		// Informational (103 Early Hints): not the final status, and not
		// stored; it is not sent either.
		return
	}
	r.status = status
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if r.body.Len()+len(p) > r.limit {
		r.overflow = true
		return 0, errors.New("idempotency: response too large")
	}
	return r.body.Write(p)
}

func (r *recorder) flush(w http.ResponseWriter) {
	for k, vs := range r.header {
		w.Header()[k] = vs
	}
	w.WriteHeader(cmp.Or(r.status, http.StatusOK))
	_, _ = w.Write(r.body.Bytes())
}
