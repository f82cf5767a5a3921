// Command inbox measures inbox claims per second (make bench-inbox).
//
// For two token kinds (time-ordered UUIDv7, and random 32-character client
// strings) it claims batches of 1, 10, 100 and 1000 tokens, one transaction
// per batch with synchronous_commit on, into an empty inbox and into one
// prefilled with 5 million tokens. Variants are interleaved and each is
// measured -rounds times; the median is reported. A CHECKPOINT precedes every
// measurement, so each pays the full-page writes a long-running system pays.
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/bench/benchkit"
)

type variant struct {
	kind  string // "uuidv7" or "random"
	full  bool
	store *inbox.Store
}

func (v variant) name() string {
	fill := "empty"
	if v.full {
		fill = "full"
	}
	return fill + "_" + v.kind
}

func main() {
	prefill := flag.Int("prefill", 5_000_000, "tokens in the full inbox")
	rounds := flag.Int("rounds", 5, "measurements per variant (median reported)")
	claims := flag.Int("claims", 40000, "claims per measurement at batch sizes >= 100; fewer for small batches")
	flag.Parse()
	ctx := context.Background()
	dsn := cmp.Or(os.Getenv("DATABASE_URL"), "postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable")
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		log.Fatalf("connect: %v", err)
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		log.Fatalf("Postgres unreachable at DATABASE_URL (run `make services`): %v", err)
	}
	printSettings(ctx, pool)

	const schema = "bench_inbox"
	if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
		log.Fatal(err)
	}
	var variants []variant
	for _, kind := range []string{"uuidv7", "random"} {
		for _, full := range []bool{false, true} {
			v := variant{kind: kind, full: full}
			cfg := inbox.Config{Schema: schema, Table: v.name(), Scope: "bench"}
			if err := inbox.Migrate(ctx, pool, cfg); err != nil {
				log.Fatal(err)
			}
			if v.store, err = inbox.New(pool, cfg); err != nil {
				log.Fatal(err)
			}
			if full {
				start := time.Now()
				if err := fill(ctx, pool, schema, v.name(), kind, *prefill); err != nil {
					log.Fatalf("prefill %s: %v", v.name(), err)
				}
				log.Printf("prefilled %s with %d tokens in %v", v.name(), *prefill, time.Since(start).Round(time.Second))
			}
			variants = append(variants, v)
		}
	}

	batches := []int{1, 10, 100, 1000}
	results := map[string][]float64{}
	for r := range *rounds {
		for _, b := range batches {
			n := *claims
			switch b { // keep each measurement a few seconds long
			case 1:
				n = *claims / 20
			case 10:
				n = *claims / 4
			}
			// Rotate the order each round so that no variant always runs
			// first (or right after a prefill's vacuum).
			for k := range variants {
				v := variants[(k+r)%len(variants)]
				if _, err := pool.Exec(ctx, "CHECKPOINT"); err != nil {
					log.Printf("CHECKPOINT: %v (continuing without)", err)
				}
				rate, err := run(ctx, pool, v, b, n)
				if err != nil {
					log.Fatalf("%s batch %d: %v", v.name(), b, err)
				}
				key := fmt.Sprintf("%s/batch%d", v.name(), b)
				results[key] = append(results[key], rate)
				log.Printf("round %d %-14s batch %4d: %8.0f claims/s", r+1, v.name(), b, rate)
			}
		}
	}

	med := func(k string) float64 { return benchkit.Median(results[k]) }
	fmt.Printf("\n%-14s %10s %10s %10s %10s   (claims/s, median of %d)\n", "inbox", "batch1", "batch10", "batch100", "batch1000", *rounds)
	for _, v := range variants {
		fmt.Printf("%-14s", v.name())
		for _, b := range batches {
			fmt.Printf(" %10.0f", med(fmt.Sprintf("%s/batch%d", v.name(), b)))
		}
		fmt.Println()
	}
	fmt.Printf("inbox: batch1000/batch1=%.1f full/empty_uuidv7=%.2f full/empty_random=%.2f claims_per_s=%.0f\n",
		med("empty_uuidv7/batch1000")/med("empty_uuidv7/batch1"),
		med("full_uuidv7/batch1000")/med("empty_uuidv7/batch1000"),
		med("full_random/batch1000")/med("empty_random/batch1000"),
		med("empty_uuidv7/batch1000"))
}

func printSettings(ctx context.Context, pool *pgxpool.Pool) {
	rows, err := pool.Query(ctx, `SELECT name, setting, coalesce(unit, '') FROM pg_settings
		WHERE name IN ('server_version', 'synchronous_commit', 'shared_buffers', 'max_wal_size', 'checkpoint_timeout', 'wal_compression', 'full_page_writes', 'fsync')
		ORDER BY name`)
	if err != nil {
		log.Fatal(err)
	}
	var name, setting, unit string
	_, err = pgx.ForEachRow(rows, []any{&name, &setting, &unit}, func() error {
		log.Printf("postgres %s = %s%s", name, setting, unit)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
}

// fill bulk-loads n tokens of kind, claimed a day ago, shaped as the
// benchmark's own tokens. Indexes are dropped during the load and rebuilt
// after, which is much faster than maintaining them row by row.
func fill(ctx context.Context, pool *pgxpool.Pool, schema, table, kind string, n int) error {
	t := pgx.Identifier{schema, table}.Sanitize()
	pk := pgx.Identifier{table + "_pkey"}.Sanitize()
	idx := pgx.Identifier{schema, table + "_processed_at_idx"}.Sanitize()
	token := `'\x01'::bytea || convert_to(md5(g::text || random()::text), 'UTF8')`
	if kind == "uuidv7" {
		// 48-bit milliseconds a day ago plus 50 tokens a millisecond, then
		// 10 random bytes.
		token = `'\x00'::bytea || substring(int8send((extract(epoch FROM now() - interval '1 day') * 1000)::bigint + g / 50) FROM 3) || substring(uuid_send(gen_random_uuid()) FROM 7)`
	}
	type step struct {
		sql  string
		args []any
	}
	for _, st := range []step{
		{sql: "ALTER TABLE " + t + " DROP CONSTRAINT " + pk},
		{sql: "DROP INDEX " + idx},
		{sql: `INSERT INTO ` + t + ` (scope, token, fingerprint, kafka_topic, kafka_partition, kafka_offset, processed_at)
		 SELECT 'bench', ` + token + `, substring(uuid_send(gen_random_uuid()) FROM 1 FOR 16), 'bench', g % 4, g / 4,
		        now() - interval '1 day' + g * interval '1 microsecond'
		 FROM generate_series(1, $1) AS g`, args: []any{n}},
		{sql: "ALTER TABLE " + t + " ADD CONSTRAINT " + pk + " PRIMARY KEY (scope, token)"},
		{sql: "CREATE INDEX " + pgx.Identifier{table + "_processed_at_idx"}.Sanitize() + " ON " + t + " (scope, processed_at)"},
		{sql: "VACUUM ANALYZE " + t},
	} {
		if _, err := pool.Exec(ctx, st.sql, st.args...); err != nil {
			return fmt.Errorf("%.60s: %w", st.sql, err)
		}
	}
	return nil
}

// run claims n new tokens in transactions of batch tokens and returns claims
// per second.
func run(ctx context.Context, pool *pgxpool.Pool, v variant, batch, n int) (float64, error) {
	reqs := make([]inbox.Request, batch)
	payload := make([]byte, 256)
	start := time.Now()
	for done := 0; done < n; done += batch {
		for i := range reqs {
			reqs[i] = inbox.Request{Token: newToken(v.kind), Fingerprint: inbox.Fingerprint(payload), Origin: inbox.Origin{Topic: "bench", Partition: i % 4, Offset: int64(done + i)}}
		}
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			got, err := v.store.ClaimBatch(ctx, tx, reqs)
			if err != nil {
				return err
			}
			for _, c := range got {
				if c.Outcome != inbox.Fresh {
					return fmt.Errorf("new token claimed as %v", c.Outcome)
				}
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func newToken(kind string) inbox.Token {
	if kind == "uuidv7" {
		return inbox.UUIDToken(uuid.Must(uuid.NewV7()))
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	t, _ := inbox.ParseToken(hex.EncodeToString(b[:]))
	return t
}
