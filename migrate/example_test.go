package migrate_test

import (
	"cmp"
	"context"
	"crypto/rand"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/migrate"
	"github.com/exactlyhq/exactly/outbox"
)

// ExampleUp creates every table a service with consumers and an outbox
// needs. Call it at start-up of every process: runs at the same time wait
// for each other, and steps already applied are skipped.
func ExampleUp() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, cmp.Or(os.Getenv("DATABASE_URL"), "postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	schema := createSchema(ctx, pool) // your application would use the default, "exactly"
	defer dropSchema(pool, schema)

	lines, err := consumer.Migrations(consumer.Config{Inbox: inbox.Config{Schema: schema}}) // the inbox and dead letters
	if err != nil {
		log.Fatal(err)
	}
	ob, err := outbox.Migrations(outbox.Config{Schema: schema})
	if err != nil {
		log.Fatal(err)
	}
	lines = append(lines, ob)
	for range 2 { // the second run finds everything applied
		if err := migrate.Up(ctx, pool, lines...); err != nil {
			log.Fatal(err)
		}
	}

	states, err := migrate.Status(ctx, pool, lines...)
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range states {
		fmt.Printf("%-21s %-12s %03d_%-28s applied: %t\n", s.Component, s.Target, s.Version, s.Name, !s.AppliedAt.IsZero())
	}
	// Output:
	// inbox                 inbox        001_create_inbox                 applied: true
	// consumer_dead_letters dead_letters 001_create_dead_letters          applied: true
	// consumer_dead_letters dead_letters 002_dead_letter_resolution       applied: true
	// consumer_dead_letters dead_letters 003_raw_header_keys              applied: true
	// consumer_dead_letters dead_letters 004_create_attempts              applied: true
	// consumer_dead_letters dead_letters 005_dead_letter_retention        applied: true
	// outbox                outbox       001_create_outbox                applied: true
	// outbox                outbox       002_rejections_and_resolution    applied: true
	// outbox                outbox       003_dead_letter_retention        applied: true
}

// ExampleStatus lists the steps of the outbox's tables before and after they
// are applied: what `exactly migrate status` shows.
func ExampleStatus() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, cmp.Or(os.Getenv("DATABASE_URL"), "postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	schema := createSchema(ctx, pool)
	defer dropSchema(pool, schema)

	line, err := outbox.Migrations(outbox.Config{Schema: schema})
	if err != nil {
		log.Fatal(err)
	}
	status := func() {
		states, err := migrate.Status(ctx, pool, line)
		if err != nil {
			log.Fatal(err)
		}
		for _, s := range states {
			state := "pending"
			if !s.AppliedAt.IsZero() { // when it was applied
				state = "applied"
			}
			fmt.Printf("%03d_%s: %s\n", s.Version, s.Name, state)
		}
	}
	status()
	if err := migrate.Up(ctx, pool, line); err != nil {
		log.Fatal(err)
	}
	status()
	// Output:
	// 001_create_outbox: pending
	// 002_rejections_and_resolution: pending
	// 003_dead_letter_retention: pending
	// 001_create_outbox: applied
	// 002_rejections_and_resolution: applied
	// 003_dead_letter_retention: applied
}

// ExampleLine_SQL prints the DDL of an inbox table for teams that apply
// migrations with their own tool (here as a goose migration) instead of
// migrate.Up. It needs no database. The script does not write the tracking
// table, so do not mix it with migrate.Up on the same tables.
func ExampleLine_SQL() {
	line, err := inbox.Migrations(inbox.Config{Schema: "shop", Table: "http_keys"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("-- +goose Up")
	fmt.Print(line.SQL())
	// Output:
	// -- +goose Up
	// -- inbox 001_create_inbox (schema shop, table http_keys)
	// -- The inbox: one row per idempotency token claimed in a scope.
	// -- token is a kind byte followed by the token's body (16 bytes for a UUID), so
	// -- time-ordered UUIDv7 tokens are appended at the right edge of the primary key
	// -- instead of being scattered through it.
	// CREATE TABLE "shop"."http_keys" (
	// 	scope           text COLLATE "C" NOT NULL,
	// 	token           bytea NOT NULL,
	// 	fingerprint     bytea,
	// 	result          bytea,
	// 	kafka_topic     text,
	// 	kafka_partition integer,
	// 	kafka_offset    bigint,
	// 	processed_at    timestamptz NOT NULL DEFAULT now(),
	// 	CONSTRAINT "http_keys_pkey" PRIMARY KEY (scope, token)
	// );
	//
	// -- Pruning walks tokens of one scope oldest first, in bounded batches.
	// CREATE INDEX "http_keys_processed_at_idx" ON "shop"."http_keys" (scope, processed_at);
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
