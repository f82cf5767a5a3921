package inbox_test

import (
	"context"
	"fmt"
	"log"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/pgtest"
)

// Example_claim claims one token twice: the first transaction applies the
// work and stores its result; the second finds the token and returns it.
func Example_claim() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.DSN())
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	schema := "example_" + pgtest.RandomSuffix()
	defer pool.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE") //nolint:errcheck

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
				return err
			}
			c, err := store.Claim(ctx, tx, inbox.Request{Token: tok, Fingerprint: inbox.Fingerprint(body)})
			if err != nil {
				return err
			}
			switch c.Outcome {
			case inbox.Duplicate:
				fmt.Printf("duplicate: %s\n", c.Stored)
				return nil
			case inbox.Conflict:
				fmt.Println("conflict: key reused for another order")
				return nil
			}
			fmt.Println("fresh: charging the card")
			return store.SetResult(ctx, tx, tok, []byte("order 1001"))
		})
		if err != nil {
			log.Fatal(err)
		}
	}
	placeOrder("9b2f6c1e-4a8d-4c3e-b1f0-3d2a5e7c9f10", []byte(`{"sku":"tea"}`))
	placeOrder("9b2f6c1e-4a8d-4c3e-b1f0-3d2a5e7c9f10", []byte(`{"sku":"tea"}`))
	placeOrder("9b2f6c1e-4a8d-4c3e-b1f0-3d2a5e7c9f10", []byte(`{"sku":"coffee"}`))
	// Output:
	// fresh: charging the card
	// duplicate: order 1001
	// conflict: key reused for another order
}
