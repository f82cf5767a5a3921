package idempotency_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/exactlyhq/exactly/idempotency"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type bundle struct {
	pool   *pgxpool.Pool
	server *httptest.Server
	// handler is what server serves, for requests net/http's client or
	// server would refuse to carry.
	handler http.Handler
	orders  string
	inbox   string
	calls   *atomic.Int32
	// release, when set, makes the handler wait for it before answering.
	release chan struct{}
	started chan struct{}
}

// setup serves POST /orders: it inserts an order row through the request's
// transaction and answers 201 with the order id. A body of "fail" answers
// 500, "panic" panics, "big" writes 2 MiB, "silent" writes nothing (an
// implicit 200), "early-hints" sends 103 before its 201, "bad-status" calls
// WriteHeader(42). Any method on paths under /raw/ reaches the same handler
// without a ServeMux, so r.Pattern is empty and the default Endpoint holds
// the path.
func setup(t *testing.T, mutate func(*idempotency.Config)) *bundle {
	t.Helper()
	pool := pgtest.Pool(t)
	schema := pgtest.Schema(t, pool)
	ctx := context.Background()
	cfg := idempotency.Config{Pool: pool, Inbox: inbox.Config{Schema: schema},
		Caller: func(r *http.Request) (string, error) {
			if u := r.Header.Get("X-User"); u != "" {
				return u, nil
			}
			return "", errors.New("no user")
		}}
	if mutate != nil {
		mutate(&cfg)
	}
	if err := inbox.Migrate(ctx, pool, cfg.Inbox); err != nil {
		t.Fatal(err)
	}
	b := &bundle{pool: pool, orders: pgx.Identifier{schema, "orders"}.Sanitize(), inbox: pgx.Identifier{schema, "inbox"}.Sanitize(),
		calls: &atomic.Int32{}, started: make(chan struct{}, 100)}
	if _, err := pool.Exec(ctx, "CREATE TABLE "+b.orders+" (id bigserial PRIMARY KEY, body text NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	mw, err := idempotency.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	wrapped := mw.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.calls.Add(1)
		b.started <- struct{}{}
		if b.release != nil {
			<-b.release
		}
		body, _ := io.ReadAll(r.Body)
		var id int64
		if err := idempotency.Tx(r.Context()).QueryRow(r.Context(), "INSERT INTO "+b.orders+" (body) VALUES ($1) RETURNING id", string(body)).Scan(&id); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		switch string(body) {
		case "fail":
			http.Error(w, "downstream unavailable", http.StatusServiceUnavailable)
			return
		case "panic":
			panic("handler bug")
		case "big":
			w.Write(make([]byte, 2<<20)) //nolint:errcheck
			return
		case "invalid":
			http.Error(w, "invalid order", http.StatusBadRequest)
			return
		case "silent":
			return
		case "early-hints":
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
		case "bad-status":
			w.WriteHeader(42)
			fmt.Fprint(w, "?")
			return
		}
		w.Header().Set("Location", fmt.Sprintf("/orders/%d", id))
		w.Header().Set("X-Not-Stored", "x")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id":%d}`, id)
	}))
	mux := http.NewServeMux()
	mux.Handle("POST /orders", wrapped)
	mux.Handle("POST /items/{name}", wrapped)
	b.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/raw/") {
			wrapped.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
	b.server = httptest.NewServer(b.handler)
	t.Cleanup(b.server.Close)
	return b
}

type response struct {
	status   int
	body     string
	header   http.Header
	replayed bool
}

func (b *bundle) post(t *testing.T, key, user, body string) response {
	t.Helper()
	return b.postTo(t, "/orders", key, user, body)
}

// postTo posts to path, which is sent as it is (percent-escapes included).
func (b *bundle) postTo(t *testing.T, path, key, user, body string) response {
	t.Helper()
	req, err := http.NewRequest("POST", b.server.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	req.Header.Set("X-User", user)
	return b.do(t, req)
}

func (b *bundle) do(t *testing.T, req *http.Request) response {
	t.Helper()
	resp, err := b.server.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, string(raw), resp.Header, resp.Header.Get(idempotency.ReplayedHeader) == "true"}
}

// serve sends req straight to the handler, past net/http's own checks of
// header values.
func (b *bundle) serve(req *http.Request) response {
	rec := httptest.NewRecorder()
	b.handler.ServeHTTP(rec, req)
	return response{rec.Code, rec.Body.String(), rec.Header(), rec.Header().Get(idempotency.ReplayedHeader) == "true"}
}

func (b *bundle) orderCount(t *testing.T) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+b.orders).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (b *bundle) keyCount(t *testing.T) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+b.inbox).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// randomText returns n random characters, all valid in a path and in a key,
// that Postgres cannot compress.
func randomText(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

func TestFirstRunsRepeatReplays(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	first := b.post(t, "k-1", "alice", "tea")
	if first.status != 201 || first.replayed || first.header.Get("Location") == "" {
		t.Fatalf("first: %+v", first)
	}
	again := b.post(t, "k-1", "alice", "tea")
	if again.status != 201 || !again.replayed || again.body != first.body || again.header.Get("Location") != first.header.Get("Location") {
		t.Fatalf("repeat: %+v, want a replay of %+v", again, first)
	}
	if again.header.Get("X-Not-Stored") != "" {
		t.Error("a header outside StoredHeaders was replayed")
	}
	if n := b.orderCount(t); n != 1 {
		t.Fatalf("%d orders, want 1", n)
	}
	// 4xx responses are results too: they are stored and replayed.
	if r := b.post(t, "k-2", "alice", "invalid"); r.status != 400 || r.replayed {
		t.Fatalf("invalid: %+v", r)
	}
	if r := b.post(t, "k-2", "alice", "invalid"); r.status != 400 || !r.replayed {
		t.Fatalf("invalid repeat: %+v", r)
	}
}

func TestRules(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	if r := b.post(t, "", "alice", "tea"); r.status != 400 || !strings.Contains(r.body, "missing Idempotency-Key") {
		t.Errorf("missing key: %+v", r)
	}
	b.post(t, "k", "alice", "tea")
	if r := b.post(t, "k", "alice", "coffee"); r.status != 422 {
		t.Errorf("same key, other body: %+v", r)
	}
	for _, key := range []string{strings.Repeat("k", 256), "tab\there", "naïve"} {
		if r := b.post(t, key, "alice", "tea"); r.status != 400 {
			t.Errorf("key %q: status %d, want 400", key, r.status)
		}
	}
	// Keys net/http would refuse to carry, handed to the handler directly.
	for _, key := range []string{"nul\x00here", "bad\xffutf8", "new\nline", strings.Repeat("k", 5000)} {
		req := httptest.NewRequest("POST", "/orders", strings.NewReader("tea"))
		req.Header.Set("Idempotency-Key", key)
		req.Header.Set("X-User", "alice")
		if r := b.serve(req); r.status != 400 {
			t.Errorf("key %q: status %d, want 400", key, r.status)
		}
	}
	if r := b.post(t, "huge-body", "alice", strings.Repeat("x", 2<<20)); r.status != 413 {
		t.Errorf("huge body: status %d, want 413", r.status)
	}
	if r := b.post(t, "k", "", "tea"); r.status != 401 {
		t.Errorf("no caller: status %d, want 401", r.status)
	}
	if n := b.orderCount(t); n != 1 {
		t.Fatalf("%d orders, want 1", n)
	}
}

// TestCallersAreSeparate: one caller's key neither replays nor blocks
// another's.
func TestCallersAreSeparate(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	a := b.post(t, "shared", "alice", "tea")
	m := b.post(t, "shared", "mallory", "tea")
	if m.replayed || m.status != 201 || m.body == a.body {
		t.Fatalf("mallory got alice's response: %+v", m)
	}
	if n := b.orderCount(t); n != 2 {
		t.Fatalf("%d orders, want 2", n)
	}
}

// TestFailureLeavesNoKey: a 5xx, a panic, an oversized response or an
// invalid status code (which net/http answers with a panic) rolls everything
// back, and a retry with the same key runs again.
func TestFailureLeavesNoKey(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	for _, body := range []string{"fail", "panic", "big", "bad-status"} {
		r := b.post(t, "k-"+body, "alice", body)
		if r.status < 500 {
			t.Errorf("%s: status %d, want 5xx", body, r.status)
		}
		if body == "big" && !strings.Contains(r.body, "cannot be stored") {
			t.Errorf("big: body %q does not explain", r.body)
		}
		before := b.calls.Load()
		b.post(t, "k-"+body, "alice", body)
		if b.calls.Load() != before+1 {
			t.Errorf("%s: the retry did not run the handler", body)
		}
	}
	if n := b.orderCount(t); n != 0 {
		t.Fatalf("%d orders left by failed requests, want 0", n)
	}
}

// TestInFlight: a repeat while the first request runs is answered 409 at
// once; with InFlightWait it waits and gets the replay.
func TestInFlight(t *testing.T) {
	t.Parallel()
	for _, wait := range []time.Duration{0, 30 * time.Second} {
		t.Run(fmt.Sprintf("wait=%v", wait), func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(c *idempotency.Config) { c.InFlightWait = wait })
			b.release = make(chan struct{})
			firstDone := make(chan response, 1)
			go func() { firstDone <- b.post(t, "slow", "alice", "tea") }()
			select {
			case <-b.started:
			case <-time.After(30 * time.Second):
				t.Fatal("the first request never reached the handler")
			}
			secondDone := make(chan response, 1)
			go func() { secondDone <- b.post(t, "slow", "alice", "tea") }()
			if wait == 0 {
				r := <-secondDone
				if r.status != 409 || r.header.Get("Retry-After") == "" {
					t.Errorf("repeat in flight: %+v, want 409 with Retry-After", r)
				}
				close(b.release)
				<-firstDone
				return
			}
			waitBlocked(t, b.pool)
			close(b.release)
			first, second := <-firstDone, <-secondDone
			if first.status != 201 || second.status != 201 || !second.replayed || first.body != second.body {
				t.Errorf("first %+v, waiting repeat %+v; want a replay", first, second)
			}
		})
	}
}

// waitBlocked waits until some backend waits on a lock: the repeat's claim.
func waitBlocked(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%unnest%'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the repeat never waited on the first request")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestFiftySimultaneous: 50 identical requests at once give one effect and
// one stored response; every answer is that response or a 409.
func TestFiftySimultaneous(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *idempotency.Config) { c.InFlightWait = 30 * time.Second })
	var wg sync.WaitGroup
	results := make(chan response, 50)
	start := make(chan struct{})
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results <- b.post(t, "double-click", "alice", "tea")
		}()
	}
	close(start)
	wg.Wait()
	close(results)
	var bodies = map[string]int{}
	replays := 0
	for r := range results {
		if r.status != 201 {
			t.Errorf("status %d: %s", r.status, r.body)
			continue
		}
		bodies[r.body]++
		if r.replayed {
			replays++
		}
	}
	if len(bodies) != 1 || replays != 49 {
		t.Errorf("responses %v with %d replays; want one response, 49 replays", bodies, replays)
	}
	if n := b.orderCount(t); n != 1 || b.calls.Load() != 1 {
		t.Fatalf("%d orders from %d handler runs, want 1 and 1", n, b.calls.Load())
	}
}

func TestOptionalKey(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *idempotency.Config) { c.Optional = true })
	if r := b.post(t, "", "alice", "tea"); r.status != 201 {
		t.Fatalf("no key, optional: %+v", r)
	}
	if r := b.post(t, "", "alice", "fail"); r.status != 503 {
		t.Fatalf("no key, failing: %+v", r)
	}
	if n := b.orderCount(t); n != 1 {
		t.Fatalf("%d orders, want 1 (the failed one rolled back)", n)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	for _, cfg := range []idempotency.Config{
		{},
		{Pool: pool, MaxKeyLen: 5000},
		{Pool: pool, MaxPathLen: -1},
		{Pool: pool, MaxPathLen: 5000},
		{Pool: pool, MaxKeyLen: inbox.MaxTokenLen, MaxPathLen: 1360}, // scope and key would not fit an index entry
		{Pool: pool, MaxBodyBytes: -1},
		{Pool: pool, InFlightWait: -time.Second},
		{Pool: pool, Inbox: inbox.Config{Table: strings.Repeat("t", 70)}},
	} {
		if _, err := idempotency.New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
	if _, err := idempotency.New(idempotency.Config{Pool: pool, MaxKeyLen: inbox.MaxTokenLen, MaxPathLen: 1359}); err != nil {
		t.Errorf("the longest MaxPathLen beside the longest MaxKeyLen: %v", err)
	}
}

// TestSilentHandler: a handler that returns without writing is answered 200
// by net/http; that 200 is what is stored and replayed.
func TestSilentHandler(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	if r := b.post(t, "k-silent", "alice", "silent"); r.status != 200 || r.replayed || r.body != "" {
		t.Fatalf("first: %+v", r)
	}
	if r := b.post(t, "k-silent", "alice", "silent"); r.status != 200 || !r.replayed || r.body != "" {
		t.Fatalf("replay: %+v, want an empty 200", r)
	}
	var raw []byte
	if err := b.pool.QueryRow(context.Background(), "SELECT result FROM "+b.inbox).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	var s struct{ Status int }
	if err := json.Unmarshal(raw, &s); err != nil || s.Status != 200 {
		t.Fatalf("stored %s (%v), want status 200", raw, err)
	}
}

// TestReplayStatusZero: rows stored with status 0 (by versions that kept the
// status of a handler that wrote nothing) replay as the 200 net/http sent,
// and rows with an invalid status answer 500 instead of panicking.
func TestReplayStatusZero(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.post(t, "k-old", "alice", "silent")
	if _, err := b.pool.Exec(context.Background(), "UPDATE "+b.inbox+` SET result = '{"status":0,"body":null}'`); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if r := b.post(t, "k-old", "alice", "silent"); r.status != 200 || !r.replayed || r.body != "" {
			t.Fatalf("replay of a status-0 row: %+v, want an empty 200", r)
		}
	}
	// Versions that took any WriteHeader code stored it, then net/http
	// panicked on it: a replay answers 500 rather than panic again.
	if _, err := b.pool.Exec(context.Background(), "UPDATE "+b.inbox+` SET result = '{"status":42,"body":null}'`); err != nil {
		t.Fatal(err)
	}
	if r := b.post(t, "k-old", "alice", "silent"); r.status != 500 || !strings.Contains(r.body, "invalid status") {
		t.Fatalf("replay of a status-42 row: %+v, want a 500 that says why", r)
	}
	if n := b.calls.Load(); n != 1 {
		t.Fatalf("the handler ran %d times, want 1", n)
	}
}

// TestEarlyHints: a 1xx before the final status is not taken for it.
func TestEarlyHints(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	first := b.post(t, "k-hints", "alice", "early-hints")
	if first.status != 201 || first.replayed {
		t.Fatalf("first: %+v, want 201", first)
	}
	if r := b.post(t, "k-hints", "alice", "early-hints"); r.status != 201 || !r.replayed || r.body != first.body {
		t.Fatalf("replay: %+v, want a replay of %+v", r, first)
	}
}

// TestTwoKeys: two Idempotency-Key headers are ambiguous, with or without
// Optional: refused, and nothing runs.
func TestTwoKeys(t *testing.T) {
	t.Parallel()
	for _, optional := range []bool{false, true} {
		t.Run(fmt.Sprintf("optional=%v", optional), func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(c *idempotency.Config) { c.Optional = optional })
			for _, keys := range [][]string{{"k-1", "k-2"}, {"k-1", "k-1"}, {"", "k-1"}} {
				req, err := http.NewRequest("POST", b.server.URL+"/orders", strings.NewReader("tea"))
				if err != nil {
					t.Fatal(err)
				}
				for _, k := range keys {
					req.Header.Add("Idempotency-Key", k)
				}
				req.Header.Set("X-User", "alice")
				if r := b.do(t, req); r.status != 400 || !strings.Contains(r.body, "ambiguous") {
					t.Errorf("keys %q: %+v, want 400 naming the ambiguity", keys, r)
				}
			}
			if b.calls.Load() != 0 || b.orderCount(t) != 0 || b.keyCount(t) != 0 {
				t.Fatalf("%d handler runs, %d orders, %d keys; want none", b.calls.Load(), b.orderCount(t), b.keyCount(t))
			}
		})
	}
}

// TestBadPaths: without a route pattern the path is part of the key's
// scope. Bytes a text column cannot hold, a line break (which separates
// endpoint and caller in the scope) and paths longer than MaxPathLen are
// refused before anything runs or is stored.
func TestBadPaths(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/raw/a%00b", 400},
		{"/raw/a%FFb", 400},
		{"/raw/a%C3", 400},
		{"/raw/a%0Ab", 400},
		{"/raw/a%0Db", 400},
		{"/raw/" + randomText(idempotency.MaxPathLenDefault-4), 414},
		{"/raw/" + randomText(3000), 414},
		{"/raw/" + randomText(100_000), 414},
	} {
		r := b.postTo(t, tc.path, "k-path", "alice", "tea")
		if r.status != tc.want || !strings.Contains(r.body, "path") {
			short := tc.path[:min(len(tc.path), 20)]
			t.Errorf("POST %s… (%d bytes): %d %s, want %d naming the path", short, len(tc.path), r.status, r.body, tc.want)
		}
	}
	if b.calls.Load() != 0 || b.orderCount(t) != 0 || b.keyCount(t) != 0 {
		t.Fatalf("%d handler runs, %d orders, %d keys; want none", b.calls.Load(), b.orderCount(t), b.keyCount(t))
	}
	// The longest path accepted, with the longest key and a long caller,
	// fits in the inbox's index.
	b = setup(t, func(c *idempotency.Config) { c.MaxKeyLen = inbox.MaxTokenLen })
	path := "/raw/" + randomText(idempotency.MaxPathLenDefault-5)
	key, user := randomText(inbox.MaxTokenLen), randomText(500)
	first := b.postTo(t, path, key, user, "tea")
	if first.status != 201 {
		t.Fatalf("longest path and key: %+v, want 201", first)
	}
	if r := b.postTo(t, path, key, user, "tea"); r.status != 201 || !r.replayed || r.body != first.body {
		t.Fatalf("longest path and key, again: %+v, want a replay of %+v", r, first)
	}
	// A route pattern keeps the path out of the scope; it is checked all the same.
	if r := b.postTo(t, "/items/a%FF", "k-pattern", "alice", "tea"); r.status != 400 {
		t.Errorf("POST /items/a%%FF: %d %s, want 400", r.status, r.body)
	}
}

// TestBadCallers: a caller that cannot be part of a scope (bytes a text
// column cannot hold, or too long to index) is refused, not a 500.
func TestBadCallers(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	for _, user := range []string{"nul\x00here", "bad\xffutf8", randomText(3000)} {
		req := httptest.NewRequest("POST", "/orders", strings.NewReader("tea"))
		req.Header.Set("Idempotency-Key", "k-caller")
		req.Header.Set("X-User", user)
		if r := b.serve(req); r.status != 400 || !strings.Contains(r.body, "caller") {
			t.Errorf("caller %q…: %d %s, want 400 naming the caller", user[:min(len(user), 20)], r.status, r.body)
		}
	}
	// A long method, part of the default Endpoint without a route pattern.
	req := httptest.NewRequest(randomText(3000), "/raw/x", strings.NewReader("tea"))
	req.Header.Set("Idempotency-Key", "k-method")
	req.Header.Set("X-User", "alice")
	if r := b.serve(req); r.status != 400 {
		t.Errorf("3000-byte method: %d %s, want 400", r.status, r.body)
	}
	if b.calls.Load() != 0 || b.orderCount(t) != 0 || b.keyCount(t) != 0 {
		t.Fatalf("%d handler runs, %d orders, %d keys; want none", b.calls.Load(), b.orderCount(t), b.keyCount(t))
	}
}

// TestBodyLimitOutside: a body cut by an http.MaxBytesReader in front of the
// middleware is answered 413, like one over MaxBodyBytes.
func TestBodyLimitOutside(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/orders", nil)
	req.Body = http.MaxBytesReader(rec, io.NopCloser(strings.NewReader(strings.Repeat("x", 100))), 10)
	req.Header.Set("Idempotency-Key", "k-limited")
	req.Header.Set("X-User", "alice")
	b.handler.ServeHTTP(rec, req)
	if rec.Code != 413 {
		t.Fatalf("body over an outer limit: %d %s, want 413", rec.Code, rec.Body)
	}
}

// TestExpiredKey: with a partitioned inbox, a UUIDv7 key whose partition
// was dropped is refused (422), never carried out again; a key of a kept
// partition is replayed.
func TestExpiredKey(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *idempotency.Config) { c.Inbox.Layout = inbox.LayoutPartitioned })
	ctx := context.Background()
	now := time.Now()
	tomorrow := now.UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
	today, later := uuidV7At(now), uuidV7At(tomorrow.Add(time.Hour))
	for _, k := range []string{today, later} {
		if r := b.post(t, k, "alice", "tea"); r.status != 201 || r.replayed {
			t.Fatalf("first %s: %+v", k, r)
		}
	}
	store, err := inbox.New(b.pool, inbox.Config{Schema: strings.Trim(strings.Split(b.inbox, ".")[0], `"`), Layout: inbox.LayoutPartitioned})
	if err != nil {
		t.Fatal(err)
	}
	if ch, err := store.DropPartitions(ctx, tomorrow); err != nil || len(ch.Dropped) != 1 {
		t.Fatalf("DropPartitions: %+v, %v", ch, err)
	}
	if r := b.post(t, today, "alice", "tea"); r.status != 422 || !strings.Contains(r.body, "older than the keys kept") {
		t.Fatalf("repeat of a dropped key: %+v, want 422", r)
	}
	if r := b.post(t, uuidV7At(now), "alice", "tea"); r.status != 422 {
		t.Fatalf("a new key below the floor: %+v, want 422", r)
	}
	if r := b.post(t, later, "alice", "tea"); r.status != 201 || !r.replayed {
		t.Fatalf("repeat of a kept key: %+v, want a replay", r)
	}
	if n := b.orderCount(t); n != 2 {
		t.Fatalf("%d orders, want 2", n)
	}
}

// uuidV7At returns a UUIDv7 of time tm in canonical form.
func uuidV7At(tm time.Time) string {
	var u [16]byte
	_, _ = rand.Read(u[:])
	ms := tm.UnixMilli()
	for i := range 6 {
		u[i] = byte(ms >> (40 - 8*i))
	}
	u[6] = 0x70 | u[6]&0x0f
	u[8] = 0x80 | u[8]&0x3f
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
