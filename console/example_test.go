package console_test

import (
	"cmp"
	"context"
	"crypto/rand"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/exactlyhq/exactly/console"
	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/outbox"
)

// Example mounts the console in an application's admin server, under
// /exactly/, behind basic authentication.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, cmp.Or(os.Getenv("DATABASE_URL"), "postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	schema := "example_" + strings.ToLower(rand.Text()[:8]) // your application would use the default, "exactly"
	defer pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	if err := consumer.Migrate(ctx, pool, consumer.Config{Inbox: inbox.Config{Schema: schema}}); err != nil {
		log.Fatal(err)
	}
	if err := outbox.Migrate(ctx, pool, outbox.Config{Schema: schema}); err != nil {
		log.Fatal(err)
	}

	c, err := console.New(console.Config{
		DB:       pool,
		Schema:   schema,
		Path:     "/exactly/",
		Username: "ops",
		Password: cmp.Or(os.Getenv("CONSOLE_PASSWORD"), "change me"),
		// Brokers: []string{"kafka:9092"}, to show consumer groups and lag.
	})
	if err != nil {
		log.Fatal(err)
	}
	admin := http.NewServeMux()
	admin.Handle("/exactly/", c)
	srv := httptest.NewServer(admin) // your admin server: http.ListenAndServe("127.0.0.1:9090", admin)
	defer srv.Close()

	for _, signIn := range []bool{false, true} {
		req, _ := http.NewRequest("GET", srv.URL+"/exactly/api/overview", nil)
		if signIn {
			req.SetBasicAuth("ops", cmp.Or(os.Getenv("CONSOLE_PASSWORD"), "change me"))
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		res.Body.Close()
		fmt.Println(res.Status)
	}
	// Output:
	// 401 Unauthorized
	// 200 OK
}
