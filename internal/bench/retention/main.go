// Command retention measures what retiring old inbox tokens costs (make
// bench-retention).
//
// It fills a partitioned inbox (inbox.LayoutPartitioned) with -rows UUIDv7
// tokens spread over -days past days, one partition a day, and a
// single-table inbox (inbox.LayoutSingle) with -single-rows tokens claimed 40
// days ago. Then:
//
//  1. Retiring 1M tokens: the oldest partition (one day, -rows/-days tokens)
//     by Store.DropPartitions, and the single table's oldest -rows/-days
//     tokens by Store.Prune (today's batched delete, 1000 a transaction):
//     seconds and WAL bytes (pg_current_wal_lsn before and after; the server
//     is shared, so the drop is measured -drop-samples times and the least
//     WAL kept). VACUUM after the delete is reported too.
//  2. Ingest with retention on and off: -writers goroutines claim fresh
//     UUIDv7 tokens in transactions of -batch for -duration, into the full
//     partitioned inbox; with retention on, a retirer calls CreatePartitions
//     and DropPartitions every -drop-every, dropping the oldest day each
//     time (each a period of -rows/-days tokens). Rounds alternate, -rounds
//     each, and the median is kept. The same runs on the single table with
//     Store.Prune deleting its old tokens meanwhile, for comparison.
//
// The last line is
//
//	retention: claims_with/without=X retire_1m_s_drop=Y retire_1m_s_delete=Z wal_delete/drop=W rows=N
//
// with X for the partitioned inbox and N the tokens the partitioned inbox
// held when ingest started.
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/bench/benchkit"
)

var (
	rows        = flag.Int("rows", 23_000_000, "tokens in the partitioned inbox at the start; the retire measurements drop 3 of its days before ingest")
	days        = flag.Int("days", 23, "past days (partitions) the partitioned inbox's tokens spread over; -rows/-days is the period retired per drop")
	singleRows  = flag.Int("single-rows", 2_000_000, "tokens in the single-table inbox, all claimed 40 days ago")
	seconds     = flag.Duration("duration", 10*time.Second, "length of one ingest measurement")
	rounds      = flag.Int("rounds", 3, "ingest measurements per variant (median reported)")
	writers     = flag.Int("writers", 2, "goroutines claiming during ingest")
	batch       = flag.Int("batch", 1000, "tokens claimed per transaction during ingest")
	dropEvery   = flag.Duration("drop-every", 4*time.Second, "how often the retirer runs during ingest with retention on")
	dropSamples = flag.Int("drop-samples", 3, "partitions dropped to measure the WAL of one drop (the least is kept)")
	fillConns   = flag.Int("fill-conns", 2, "connections filling partitions in parallel")
	planCache   = flag.String("plan-cache-mode", "", "the sessions' plan_cache_mode (default: the server's)")
)

const (
	schema = "bench_retention"
	day    = 24 * time.Hour
)

type bench struct {
	pool   *pgxpool.Pool
	part   *inbox.Store
	single *inbox.Store
	now    time.Time // the database's clock at the start
}

func main() {
	flag.Parse()
	log.SetFlags(log.Ltime)
	if *rows < *days || *days < 2+int(*seconds / *dropEvery)*(*rounds)+*dropSamples || *singleRows < *rows / *days || *batch < 1 || *batch > inbox.MaxBatch || *writers < 1 {
		log.Fatal("bad flags: need rows >= days, days >= 2 + drop-samples + rounds*duration/drop-every (partitions to drop), single-rows >= rows/days, batch in 1..10000, writers >= 1")
	}
	start := time.Now()
	ctx := context.Background()
	dsn := cmp.Or(os.Getenv("DATABASE_URL"), "postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable")
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		log.Fatalf("DATABASE_URL: %v", err)
	}
	pcfg.MaxConns = int32(*writers + *fillConns + 4)
	if *planCache != "" {
		pcfg.ConnConfig.RuntimeParams["plan_cache_mode"] = *planCache
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		log.Fatalf("connect: %v", err)
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		log.Fatalf("Postgres unreachable at DATABASE_URL (run `make services`): %v", err)
	}
	b := &bench{pool: pool}
	if err := b.run(ctx); err != nil {
		b.drop()
		log.Fatalf("FAILED after %v: %v", time.Since(start).Round(time.Second), err)
	}
	b.drop()
	log.Printf("total run time %v", time.Since(start).Round(time.Second))
}

func (b *bench) drop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := b.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		log.Printf("drop schema: %v", err)
	}
}

func (b *bench) run(ctx context.Context) error {
	b.drop()
	if err := b.pool.QueryRow(ctx, "SELECT now()").Scan(&b.now); err != nil {
		return err
	}
	var err error
	pcfg := inbox.Config{Schema: schema, Table: "part", Scope: "bench", Layout: inbox.LayoutPartitioned}
	if err := inbox.Migrate(ctx, b.pool, pcfg); err != nil {
		return err
	}
	if b.part, err = inbox.New(b.pool, pcfg); err != nil {
		return err
	}
	scfg := inbox.Config{Schema: schema, Table: "single", Scope: "bench"}
	if err := inbox.Migrate(ctx, b.pool, scfg); err != nil {
		return err
	}
	if b.single, err = inbox.New(b.pool, scfg); err != nil {
		return err
	}

	t0 := time.Now()
	if err := b.fillPartitions(ctx); err != nil {
		return fmt.Errorf("fill partitions: %w", err)
	}
	log.Printf("filled the partitioned inbox with %d tokens over %d days in %v", *rows, *days, time.Since(t0).Round(time.Second))
	t0 = time.Now()
	if err := b.fillSingle(ctx); err != nil {
		return fmt.Errorf("fill single table: %w", err)
	}
	log.Printf("filled the single-table inbox with %d tokens in %v", *singleRows, time.Since(t0).Round(time.Second))

	perDay := int64(*rows / *days)
	drop, err := b.retireByDrop(ctx)
	if err != nil {
		return err
	}
	del, err := b.retireByDelete(ctx, perDay)
	if err != nil {
		return err
	}

	held, err := b.count(ctx, "part")
	if err != nil {
		return err
	}
	res, err := b.ingest(ctx)
	if err != nil {
		return err
	}

	fmt.Println()
	fmt.Printf("retiring %d tokens      seconds    WAL bytes\n", perDay)
	fmt.Printf("  partition drop    %10.3f %12d   (least WAL of %d drops; seconds of the first)\n", drop.seconds, drop.wal, *dropSamples)
	fmt.Printf("  batched delete    %10.3f %12d   (Store.Prune, %d per transaction)\n", del.seconds, del.wal, inbox.PruneBatchSizeDefault)
	fmt.Printf("  vacuum after it   %10.3f %12d\n", del.vacuumSeconds, del.vacuumWAL)
	fmt.Println()
	fmt.Printf("ingest (claims/s, %d writers, batches of %d, %v each, median of %d)\n", *writers, *batch, *seconds, *rounds)
	fmt.Printf("  %-12s %10s %10s %8s   %s\n", "layout", "without", "with", "ratio", "retired during the runs with retention")
	for _, l := range []string{"partitioned", "single"} {
		r := res[l]
		fmt.Printf("  %-12s %10.0f %10.0f %8.2f   %s\n", l, r.without, r.with, r.with/r.without, r.retired)
	}
	walRatio := float64(del.wal) / float64(max(drop.wal, 1))
	fmt.Printf("retention: claims_with/without=%.2f retire_1m_s_drop=%.3f retire_1m_s_delete=%.2f wal_delete/drop=%.0f rows=%d\n",
		res["partitioned"].with/res["partitioned"].without, drop.seconds, del.seconds, walRatio, held)
	return nil
}

// fillSeed creates a table of n random 26-byte blobs that the fills take
// token and fingerprint bytes from: generating them is most of the cost of
// a fill, and doing it once makes the fills several times faster.
func (b *bench) fillSeed(ctx context.Context, n int) error {
	_, err := b.pool.Exec(ctx, fmt.Sprintf(`CREATE UNLOGGED TABLE %s AS
		SELECT g, decode(md5(g::text), 'hex') || decode(md5((g + 1)::text), 'hex') AS h FROM generate_series(0, %d) g`,
		pgx.Identifier{schema, "seed"}.Sanitize(), n-1))
	return err
}

// fillPartitions creates a partition for each of -days past days and fills
// it with -rows/-days UUIDv7 tokens of that day, claimed at their time. Each
// is loaded as a table of its own without indexes, indexed, given a check
// constraint matching its bounds (so attaching does not scan it), attached.
func (b *bench) fillPartitions(ctx context.Context) error {
	perDay := *rows / *days
	if err := b.fillSeed(ctx, perDay); err != nil {
		return err
	}
	today := b.now.UTC().Truncate(day)
	work := make(chan int)
	errs := make(chan error, *fillConns)
	var wg sync.WaitGroup
	var done atomic.Int64
	for range *fillConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				from := today.Add(-time.Duration(*days-d) * day)
				if err := b.fillPartition(ctx, from, perDay); err != nil {
					errs <- fmt.Errorf("day %s: %w", from.Format(time.DateOnly), err)
					for range work { // drain
					}
					return
				}
				if n := done.Add(1); n%5 == 0 {
					log.Printf("  filled %d of %d partitions", n, *days)
				}
			}
		}()
	}
	for d := range *days {
		work <- d
	}
	close(work)
	wg.Wait()
	close(errs)
	return <-errs
}

func (b *bench) fillPartition(ctx context.Context, from time.Time, n int) error {
	name := "part_p" + from.Format("20060102_1504")
	t := pgx.Identifier{schema, name}.Sanitize()
	lo, hi := from.UnixMilli(), from.Add(day).UnixMilli()
	step := float64(hi-lo) / float64(n)
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	bound := func(ms int64) string { return fmt.Sprintf(`'\x00%012x'`, ms) }
	for _, stmt := range []string{
		"SET synchronous_commit = off",
		"CREATE TABLE " + t + " (LIKE " + pgx.Identifier{schema, "part"}.Sanitize() + " INCLUDING DEFAULTS)",
		fmt.Sprintf(`INSERT INTO %s (scope, token, fingerprint, kafka_topic, kafka_partition, kafka_offset, processed_at)
			SELECT 'bench', '\x00'::bytea || substring(int8send(ms) FROM 3) || substring(h FROM 1 FOR 10), substring(h FROM 11 FOR 16),
			       'bench', g %% 4, g / 4, to_timestamp(ms / 1000.0)
			FROM %s, LATERAL (SELECT %d + floor(g * %f)::bigint AS ms) x`,
			t, pgx.Identifier{schema, "seed"}.Sanitize(), lo, step),
		"ALTER TABLE " + t + " ADD PRIMARY KEY (scope, token)",
		fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT bounds CHECK (token IS NOT NULL AND token >= %s AND token < %s)", t, bound(lo), bound(hi)),
		fmt.Sprintf("ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%s) TO (%s)", pgx.Identifier{schema, "part"}.Sanitize(), t, bound(lo), bound(hi)),
		"ALTER TABLE " + t + " DROP CONSTRAINT bounds",
		"VACUUM ANALYZE " + t,
		"RESET synchronous_commit",
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%.70s: %w", stmt, err)
		}
	}
	return nil
}

// fillSingle loads -single-rows UUIDv7 tokens into the single table, the
// oldest claimed 40 days ago, one a microsecond, with its indexes built
// after the load.
func (b *bench) fillSingle(ctx context.Context) error {
	t := pgx.Identifier{schema, "single"}.Sanitize()
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	base := b.now.Add(-40 * day)
	perDay := *rows / *days
	copies := (*singleRows + perDay - 1) / perDay
	for _, stmt := range []string{
		"SET synchronous_commit = off",
		"ALTER TABLE " + t + " DROP CONSTRAINT single_pkey",
		"DROP INDEX " + pgx.Identifier{schema, "single_processed_at_idx"}.Sanitize(),
		// Token i of copy c: millisecond (c*perDay + i)/1000 after base, and
		// the seed's bytes i, so that every token is distinct.
		fmt.Sprintf(`INSERT INTO %s (scope, token, fingerprint, kafka_topic, kafka_partition, kafka_offset, processed_at)
			SELECT 'bench', '\x00'::bytea || substring(int8send(%d + n / 1000) FROM 3) || substring(h FROM 1 FOR 10), substring(h FROM 11 FOR 16),
			       'bench', n %% 4, n / 4, $1::timestamptz + n * interval '1 microsecond'
			FROM %s, generate_series(0, %d) c, LATERAL (SELECT c::bigint * %d + g AS n) x
			WHERE n < %d`,
			t, base.UnixMilli(), pgx.Identifier{schema, "seed"}.Sanitize(), copies-1, perDay, *singleRows),
		"ALTER TABLE " + t + " ADD CONSTRAINT single_pkey PRIMARY KEY (scope, token)",
		"CREATE INDEX single_processed_at_idx ON " + t + " (scope, processed_at)",
		"VACUUM ANALYZE " + t,
		"RESET synchronous_commit",
	} {
		args := []any{}
		if len(stmt) > 6 && stmt[:6] == "INSERT" {
			args = append(args, base)
		}
		if _, err := conn.Exec(ctx, stmt, args...); err != nil {
			return fmt.Errorf("%.70s: %w", stmt, err)
		}
	}
	return nil
}

type retired struct {
	seconds, vacuumSeconds float64
	wal, vacuumWAL         int64
}

// retireByDrop drops the oldest partitions one at a time, -drop-samples of
// them, and keeps the first's time and the least WAL.
func (b *bench) retireByDrop(ctx context.Context) (retired, error) {
	var r retired
	r.wal = -1
	for i := range *dropSamples {
		ps, err := b.part.Partitions(ctx)
		if err != nil {
			return r, err
		}
		lsn0, err := b.lsn(ctx)
		if err != nil {
			return r, err
		}
		t0 := time.Now()
		ch, err := b.part.DropPartitions(ctx, ps[0].To)
		elapsed := time.Since(t0).Seconds()
		if err != nil {
			return r, err
		}
		if len(ch.Dropped) != 1 {
			return r, fmt.Errorf("dropped %v, want %s", ch.Dropped, ps[0].Name)
		}
		wal, err := b.walSince(ctx, lsn0)
		if err != nil {
			return r, err
		}
		log.Printf("drop %d: %s in %.3fs, %d bytes of WAL", i+1, ps[0].Name, elapsed, wal)
		if i == 0 {
			r.seconds = elapsed
		}
		if r.wal < 0 || wal < r.wal {
			r.wal = wal
		}
	}
	return r, nil
}

// retireByDelete prunes the single table's oldest n tokens with Store.Prune,
// then vacuums it.
func (b *bench) retireByDelete(ctx context.Context, n int64) (retired, error) {
	var r retired
	// The cut-off after the n-th token: one a microsecond from 40 days ago.
	before := b.now.Add(-40 * day).Add(time.Duration(n) * time.Microsecond)
	lsn0, err := b.lsn(ctx)
	if err != nil {
		return r, err
	}
	t0 := time.Now()
	deleted, err := b.single.Prune(ctx, before)
	r.seconds = time.Since(t0).Seconds()
	if err != nil {
		return r, err
	}
	if deleted != n {
		return r, fmt.Errorf("prune deleted %d tokens, want %d", deleted, n)
	}
	if r.wal, err = b.walSince(ctx, lsn0); err != nil {
		return r, err
	}
	log.Printf("batched delete of %d tokens in %.2fs, %d bytes of WAL", n, r.seconds, r.wal)
	lsn0, err = b.lsn(ctx)
	if err != nil {
		return r, err
	}
	t0 = time.Now()
	if _, err := b.pool.Exec(ctx, "VACUUM "+pgx.Identifier{schema, "single"}.Sanitize()); err != nil {
		return r, err
	}
	r.vacuumSeconds = time.Since(t0).Seconds()
	r.vacuumWAL, err = b.walSince(ctx, lsn0)
	return r, err
}

func (b *bench) lsn(ctx context.Context) (string, error) {
	var lsn string
	err := b.pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn)
	return lsn, err
}

func (b *bench) walSince(ctx context.Context, lsn string) (int64, error) {
	var n int64
	err := b.pool.QueryRow(ctx, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint", lsn).Scan(&n)
	return n, err
}

func (b *bench) count(ctx context.Context, table string) (int64, error) {
	var n int64
	err := b.pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, table}.Sanitize()).Scan(&n)
	return n, err
}

type ingestResult struct {
	without, with float64
	retired       string
}

// ingest measures claims/s into each inbox with retention off and on,
// alternating, and returns the medians.
func (b *bench) ingest(ctx context.Context) (map[string]ingestResult, error) {
	out := map[string]ingestResult{}
	for _, l := range []string{"partitioned", "single"} {
		store := b.part
		if l == "single" {
			store = b.single
		}
		var without, with []float64
		var retiredTotal int64
		var dropped int
		for r := range *rounds {
			for _, on := range []bool{r%2 == 1, r%2 == 0} {
				rate, n, d, err := b.measure(ctx, store, l, on)
				if err != nil {
					return nil, fmt.Errorf("%s, retention %v: %w", l, on, err)
				}
				state := "off"
				if on {
					state = "on "
					with = append(with, rate)
					retiredTotal += n
					dropped += d
				} else {
					without = append(without, rate)
				}
				log.Printf("round %d %-11s retention %s: %8.0f claims/s", r+1, l, state, rate)
			}
		}
		res := ingestResult{without: benchkit.Median(without), with: benchkit.Median(with)}
		if l == "partitioned" {
			res.retired = fmt.Sprintf("%d partitions, %d tokens", dropped, retiredTotal)
		} else {
			res.retired = fmt.Sprintf("%d tokens deleted", retiredTotal)
		}
		out[l] = res
	}
	return out, nil
}

// measure runs the writers for -duration, with the retirer when on, and
// returns claims/s and what the retirer retired.
func (b *bench) measure(ctx context.Context, store *inbox.Store, layout string, on bool) (rate float64, retiredTokens int64, dropped int, err error) {
	if _, err := b.pool.Exec(ctx, "CHECKPOINT"); err != nil {
		log.Printf("CHECKPOINT: %v (continuing without)", err)
	}
	mctx, cancel := context.WithTimeout(ctx, *seconds)
	defer cancel()
	var claimed atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, *writers+1)
	start := time.Now()
	for range *writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.write(mctx, store, &claimed); err != nil && mctx.Err() == nil {
				errs <- err
			}
		}()
	}
	if on {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, d, err := b.retire(mctx, store, layout)
			retiredTokens, dropped = n, d
			if err != nil && mctx.Err() == nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, 0, err
	}
	return float64(claimed.Load()) / elapsed.Seconds(), retiredTokens, dropped, nil
}

// write claims fresh UUIDv7 tokens in transactions of -batch until ctx ends;
// a transaction cut by the end is not counted.
func (b *bench) write(ctx context.Context, store *inbox.Store, claimed *atomic.Int64) error {
	reqs := make([]inbox.Request, *batch)
	fp := inbox.Fingerprint(make([]byte, 256))
	for off := int64(0); ctx.Err() == nil; off += int64(*batch) {
		for i := range reqs {
			reqs[i] = inbox.Request{Token: inbox.UUIDToken(uuid.Must(uuid.NewV7())), Fingerprint: fp, Origin: inbox.Origin{Topic: "bench", Partition: i % 4, Offset: off + int64(i)}}
		}
		err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
			got, err := store.ClaimBatch(ctx, tx, reqs)
			if err != nil {
				return err
			}
			for _, c := range got {
				if c.Outcome != inbox.Fresh {
					return fmt.Errorf("a new token was claimed %v", c.Outcome)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		claimed.Add(int64(*batch))
	}
	return nil
}

// retire runs retention until ctx ends: for the partitioned inbox every
// -drop-every it creates the coming partitions and drops the oldest day;
// for the single table it prunes tokens claimed more than 30 days ago
// without pause, as a prune catching up with a backlog does.
func (b *bench) retire(ctx context.Context, store *inbox.Store, layout string) (tokens int64, dropped int, err error) {
	if layout == "single" {
		// Prune stops at ctx's end; what it deleted until then counts.
		n, err := store.Prune(ctx, b.now.Add(-30*day))
		return n, 0, err
	}
	perDay := int64(*rows / *days)
	t := time.NewTicker(*dropEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return tokens, dropped, nil
		case <-t.C:
		}
		if _, err := store.CreatePartitions(ctx); err != nil {
			return tokens, dropped, err
		}
		ps, err := store.Partitions(ctx)
		if err != nil {
			return tokens, dropped, err
		}
		if len(ps) == 0 || !ps[0].To.Before(b.now.UTC().Truncate(day)) {
			return tokens, dropped, fmt.Errorf("no past partition left to drop (raise -days)")
		}
		ch, err := store.DropPartitions(ctx, ps[0].To)
		if err != nil {
			return tokens, dropped, err
		}
		dropped += len(ch.Dropped)
		tokens += int64(len(ch.Dropped)) * perDay
	}
}
