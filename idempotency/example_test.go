package idempotency_test

import (
	"cmp"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/exactlyhq/exactly/idempotency"
	"github.com/exactlyhq/exactly/inbox"
)

// ExampleMiddleware_Wrap serves POST /orders behind the middleware. The
// handler writes through the request's transaction, which commits with the
// stored response. A retry with the same Idempotency-Key gets that response
// again without running the handler; the same key with another body is
// refused.
func ExampleMiddleware_Wrap() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, cmp.Or(os.Getenv("DATABASE_URL"), "postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	schema := createSchema(ctx, pool) // your application would use the default, "exactly"
	defer dropSchema(pool, schema)

	keys := inbox.Config{Schema: schema} // keys and responses live in an inbox table
	if err := inbox.Migrate(ctx, pool, keys); err != nil {
		log.Fatal(err)
	}
	orders := pgx.Identifier{schema, "orders"}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+orders+" (id bigserial PRIMARY KEY, sku text NOT NULL)"); err != nil {
		log.Fatal(err)
	}
	mw, err := idempotency.New(idempotency.Config{Pool: pool, Inbox: keys})
	if err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.Handle("POST /orders", mw.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sku, _ := io.ReadAll(r.Body)
		var id int64
		err := idempotency.Tx(r.Context()).QueryRow(r.Context(), "INSERT INTO "+orders+" (sku) VALUES ($1) RETURNING id", string(sku)).Scan(&id)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError) // 5xx: nothing is stored, a retry runs again
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"order":%d}`, id)
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	post := func(key, sku string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/orders", strings.NewReader(sku))
		req.Header.Set("Idempotency-Key", key)
		resp, err := srv.Client().Do(req)
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Print(resp.Status)
		if resp.Header.Get(idempotency.ReplayedHeader) == "true" {
			fmt.Print(" (replayed)")
		}
		if resp.StatusCode < 400 { // errors are problem+json documents
			fmt.Printf(" %s", body)
		}
		fmt.Println()
	}
	post("a4f1c3d2-7b9e-4e21-9c3a-5d8f0b6e2a71", "tea")
	post("a4f1c3d2-7b9e-4e21-9c3a-5d8f0b6e2a71", "tea")    // the client timed out and retries
	post("a4f1c3d2-7b9e-4e21-9c3a-5d8f0b6e2a71", "coffee") // a client bug: another order, same key

	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+orders).Scan(&n); err != nil {
		log.Fatal(err)
	}
	fmt.Println("orders:", n)
	// Output:
	// 201 Created {"order":1}
	// 201 Created (replayed) {"order":1}
	// 422 Unprocessable Entity
	// orders: 1
}

// createSchema creates a schema of its own for an example, so that examples
// and tests can share a database.
func createSchema(ctx context.Context, pool *pgxpool.Pool) string {
	name := "example_" + strings.ToLower(rand.Text()[:12])
	if _, err := pool.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{name}.Sanitize()); err != nil {
		log.Fatal(err)
	}
	return name
}

// dropSchema drops an example's schema and everything in it.
func dropSchema(pool *pgxpool.Pool, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := pool.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{name}.Sanitize()+" CASCADE"); err != nil {
		log.Print(err)
	}
}
