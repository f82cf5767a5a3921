// Package pgtest gives each test its own schema in a real Postgres.
//
// Tests run in parallel against one database; a random schema per test keeps
// them apart. The pool it returns has an empty search_path, so any SQL that
// forgets to qualify a table with its schema fails instead of silently
// finding some other table.
package pgtest

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DSNDefault is the database the local services scripts create.
const DSNDefault = "postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable"

// DSN returns DATABASE_URL, or DSNDefault when it is unset.
func DSN() string { return cmp.Or(os.Getenv("DATABASE_URL"), DSNDefault) }

// Addr returns the host:port of DSN.
func Addr(tb testing.TB) string {
	tb.Helper()
	cfg, err := pgx.ParseConfig(DSN())
	if err != nil {
		tb.Fatal(err)
	}
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
}

// Pool returns a pool with an empty search_path, closed when the test ends.
// It fails the test, with a hint, when Postgres is unreachable: integration
// tests never skip silently.
func Pool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(DSN())
	if err != nil {
		tb.Fatalf("pgtest: parse DATABASE_URL: %v", err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = ""
	cfg.MaxConns = 16
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		tb.Fatalf("pgtest: connect: %v", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		tb.Fatalf("pgtest: Postgres at %s is unreachable (run `make services`): %v", cfg.ConnConfig.Host, err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// Schema returns a fresh schema name, unique to this test, and drops the
// schema with everything in it when the test ends.
func Schema(tb testing.TB, pool *pgxpool.Pool) string {
	tb.Helper()
	name := "test_" + RandomSuffix()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{name}.Sanitize()+" CASCADE"); err != nil {
			tb.Errorf("pgtest: drop schema %s: %v", name, err)
		}
	})
	return name
}

// RandomSuffix returns 12 random hex characters.
func RandomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// PoolVia is Pool connecting to addr (host:port), such as a test proxy in
// front of Postgres, instead of the DSN's host and port; user, password and
// database stay the DSN's. It never uses TLS, whatever the DSN's sslmode, so
// that a proxy can read the messages (internal/netproxy.PGSplitter).
func PoolVia(tb testing.TB, addr string) *pgxpool.Pool {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(DSN())
	if err != nil {
		tb.Fatalf("pgtest: parse DATABASE_URL: %v", err)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatalf("pgtest: %q is not host:port: %v", addr, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		tb.Fatalf("pgtest: port of %q: %v", addr, err)
	}
	cfg.ConnConfig.Host, cfg.ConnConfig.Port = host, uint16(p)
	cfg.ConnConfig.TLSConfig, cfg.ConnConfig.Fallbacks = nil, nil
	cfg.ConnConfig.RuntimeParams["search_path"] = ""
	cfg.MaxConns = 16
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		tb.Fatalf("pgtest: connect via %s: %v", addr, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		tb.Fatalf("pgtest: Postgres via %s is unreachable: %v", addr, err)
	}
	tb.Cleanup(pool.Close)
	return pool
}
