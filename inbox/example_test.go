package inbox_test

import (
	"cmp"
	"context"
	"crypto/rand"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/exactlyhq/exactly/inbox"
)

// ExampleStore_Claim places one order three times with the same
// Idempotency-Key: the first claim is fresh and does the work, the repeat is
// a duplicate that gets the stored result back, and the same key with
// another payload is a conflict.
func ExampleStore_Claim() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, cmp.Or(os.Getenv("DATABASE_URL"), "postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	schema := createSchema(ctx, pool) // your application would use the default, "exactly"
	defer dropSchema(pool, schema)

	cfg := inbox.Config{Schema: schema, Scope: "checkout"}
	if err := inbox.Migrate(ctx, pool, cfg); err != nil {
		log.Fatal(err)
	}
	store, err := inbox.New(pool, cfg)
	if err != nil {
		log.Fatal(err)
	}

	placeOrder := func(key string, body []byte) {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			tok, err := inbox.ParseToken(key)
			if err != nil {
				return err // wraps inbox.ErrNoToken or inbox.ErrInvalidToken
			}
			c, err := store.Claim(ctx, tx, inbox.Request{Token: tok, Fingerprint: inbox.Fingerprint(body)})
			if err != nil {
				return err
			}
			switch c.Outcome {
			case inbox.Duplicate:
				fmt.Printf("duplicate: answer again with %q\n", c.Stored)
				return nil
			case inbox.Conflict:
				fmt.Println("conflict: the key was used for another order")
				return nil
			}
			// inbox.Fresh: do the work in tx, and keep its result for
			// duplicates. Both commit with the token, or none of them.
			fmt.Println("fresh: charging the card")
			return store.SetResult(ctx, tx, tok, []byte("order 1001"))
		})
		if err != nil {
			log.Fatal(err)
		}
	}
	placeOrder("9b2f6c1e-4a8d-4c3e-b1f0-3d2a5e7c9f10", []byte(`{"sku":"tea"}`))
	placeOrder("9b2f6c1e-4a8d-4c3e-b1f0-3d2a5e7c9f10", []byte(`{"sku":"tea"}`))    // a double click
	placeOrder("9b2f6c1e-4a8d-4c3e-b1f0-3d2a5e7c9f10", []byte(`{"sku":"coffee"}`)) // a client bug
	// Output:
	// fresh: charging the card
	// duplicate: answer again with "order 1001"
	// conflict: the key was used for another order
}

// ExampleStore_DropPartitions retires a day of tokens in a partitioned
// inbox with one DROP. A token of that day is expired afterwards: the inbox
// no longer knows whether it was applied, so it is never claimed fresh.
func ExampleStore_DropPartitions() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, cmp.Or(os.Getenv("DATABASE_URL"), "postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	schema := createSchema(ctx, pool)
	defer dropSchema(pool, schema)

	// Migrate creates today's partition and the next three days'.
	cfg := inbox.Config{Schema: schema, Scope: "payments", Layout: inbox.LayoutPartitioned}
	if err := inbox.Migrate(ctx, pool, cfg); err != nil {
		log.Fatal(err)
	}
	store, err := inbox.New(pool, cfg)
	if err != nil {
		log.Fatal(err)
	}
	tok := inbox.UUIDToken(uuid.Must(uuid.NewV7())) // what the outbox gives every message
	claim := func() {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			c, err := store.Claim(ctx, tx, inbox.Request{Token: tok})
			fmt.Println(c.Outcome)
			return err
		})
		if err != nil {
			log.Fatal(err)
		}
	}
	claim()
	claim() // a redelivery

	// Retire the token's day: every token older than the next midnight. In
	// production the cut-off is the database's now() minus the retention.
	minted, _ := tok.Time()
	ch, err := store.DropPartitions(ctx, minted.Truncate(24*time.Hour).Add(24*time.Hour))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("dropped", len(ch.Dropped), "partition")
	claim() // a redelivery after the retention
	// Output:
	// fresh
	// duplicate
	// dropped 1 partition
	// expired
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
