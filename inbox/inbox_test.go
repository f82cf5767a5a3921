package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/pgtest"
	"github.com/exactlyhq/exactly/migrate"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type bundle struct {
	pool  *pgxpool.Pool
	store *inbox.Store
	cfg   inbox.Config
}

func setup(t *testing.T, cfg inbox.Config) bundle {
	t.Helper()
	pool := pgtest.Pool(t)
	if cfg.Schema == "" {
		cfg.Schema = pgtest.Schema(t, pool)
	}
	ctx := context.Background()
	if err := inbox.Migrate(ctx, pool, cfg); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	store, err := inbox.New(pool, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return bundle{pool: pool, store: store, cfg: store.Config()}
}

func tok(t testing.TB, s string) inbox.Token {
	t.Helper()
	k, err := inbox.ParseToken(s)
	if err != nil {
		t.Fatalf("ParseToken(%q): %v", s, err)
	}
	return k
}

// inTx runs fn in a transaction and commits it.
func inTx(t *testing.T, pool *pgxpool.Pool, fn func(tx pgx.Tx)) {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	fn(tx)
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
}

func claim(t *testing.T, s *inbox.Store, tx pgx.Tx, r inbox.Request) inbox.Claimed {
	t.Helper()
	c, err := s.Claim(context.Background(), tx, r)
	if err != nil {
		t.Fatalf("Claim(%s): %v", r.Token, err)
	}
	return c
}

// layouts runs fn as a parallel subtest for each layout.
func layouts(t *testing.T, fn func(t *testing.T, layout inbox.Layout)) {
	t.Helper()
	for _, l := range []inbox.Layout{inbox.LayoutSingle, inbox.LayoutPartitioned} {
		t.Run(string(l), func(t *testing.T) {
			t.Parallel()
			fn(t, l)
		})
	}
}

func TestClaimOutcomes(t *testing.T) {
	t.Parallel()
	layouts(t, testClaimOutcomes)
}

func testClaimOutcomes(t *testing.T, layout inbox.Layout) {
	b := setup(t, inbox.Config{Layout: layout})
	ctx := context.Background()
	k := tok(t, "order-42")
	fp := inbox.Fingerprint([]byte(`{"amount":10}`))
	origin := inbox.Origin{Topic: "orders", Partition: 3, Offset: 77}

	inTx(t, b.pool, func(tx pgx.Tx) {
		if got := claim(t, b.store, tx, inbox.Request{Token: k, Fingerprint: fp, Origin: origin}); got.Outcome != inbox.Fresh {
			t.Fatalf("first claim: got %v, want fresh", got.Outcome)
		}
		if err := b.store.SetResult(ctx, tx, k, []byte("receipt-1")); err != nil {
			t.Fatal(err)
		}
	})

	inTx(t, b.pool, func(tx pgx.Tx) {
		got := claim(t, b.store, tx, inbox.Request{Token: k, Fingerprint: fp})
		if got.Outcome != inbox.Duplicate || string(got.Stored) != "receipt-1" || got.FirstSeen != origin || got.ProcessedAt.IsZero() {
			t.Fatalf("second claim: got %+v, want duplicate with receipt-1 first seen at %+v", got, origin)
		}
		got = claim(t, b.store, tx, inbox.Request{Token: k, Fingerprint: inbox.Fingerprint([]byte(`{"amount":99}`))})
		if got.Outcome != inbox.Conflict || string(got.Stored) != "receipt-1" {
			t.Fatalf("claim with other payload: got %+v, want conflict", got)
		}
		// Without a fingerprint there is nothing to compare: a duplicate.
		if got := claim(t, b.store, tx, inbox.Request{Token: k}); got.Outcome != inbox.Duplicate {
			t.Fatalf("claim without fingerprint: got %v, want duplicate", got.Outcome)
		}
	})

	// Scopes separate equal tokens.
	other := b.store.WithScope("other-group")
	inTx(t, b.pool, func(tx pgx.Tx) {
		if got := claim(t, other, tx, inbox.Request{Token: k, Fingerprint: fp}); got.Outcome != inbox.Fresh {
			t.Fatalf("claim in another scope: got %v, want fresh", got.Outcome)
		}
	})

	inTx(t, b.pool, func(tx pgx.Tx) {
		err := b.store.SetResult(ctx, tx, tok(t, "never-claimed"), []byte("x"))
		if !errors.Is(err, inbox.ErrNotClaimed) {
			t.Fatalf("SetResult of unclaimed token: got %v, want ErrNotClaimed", err)
		}
	})
}

func TestClaimBatch(t *testing.T) {
	t.Parallel()
	layouts(t, testClaimBatch)
}

func testClaimBatch(t *testing.T, layout inbox.Layout) {
	b := setup(t, inbox.Config{Layout: layout})
	ctx := context.Background()
	u := "0190c5a2-7b1e-7c3d-9e4f-a1b2c3d4e5f6"
	inTx(t, b.pool, func(tx pgx.Tx) {
		if got := claim(t, b.store, tx, inbox.Request{Token: tok(t, "old")}); got.Outcome != inbox.Fresh {
			t.Fatalf("got %v", got.Outcome)
		}
	})
	reqs := []inbox.Request{
		{Token: tok(t, "a"), Fingerprint: []byte{1}},
		{Token: tok(t, "old")},
		{Token: tok(t, u)},
		{Token: tok(t, "a"), Fingerprint: []byte{1}},
		{Token: tok(t, "a"), Fingerprint: []byte{2}},
		// The same UUID in upper case is the same token.
		{Token: tok(t, "0190C5A2-7B1E-7C3D-9E4F-A1B2C3D4E5F6")},
	}
	want := []inbox.Outcome{inbox.Fresh, inbox.Duplicate, inbox.Fresh, inbox.Duplicate, inbox.Conflict, inbox.Duplicate}
	inTx(t, b.pool, func(tx pgx.Tx) {
		got, err := b.store.ClaimBatch(ctx, tx, reqs)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if got[i].Outcome != want[i] {
				t.Errorf("request %d (%s): got %v, want %v", i, reqs[i].Token, got[i].Outcome, want[i])
			}
		}
	})
	var n int
	if err := b.pool.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM %s", pgx.Identifier{b.cfg.Schema, b.cfg.Table}.Sanitize())).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("inbox holds %d rows, want 3 (old, a, the uuid)", n)
	}

	inTx(t, b.pool, func(tx pgx.Tx) {
		if _, err := b.store.ClaimBatch(ctx, tx, []inbox.Request{{}}); !errors.Is(err, inbox.ErrNoToken) {
			t.Fatalf("zero token: got %v, want ErrNoToken", err)
		}
	})
}

func TestRollbackReleasesToken(t *testing.T) {
	t.Parallel()
	layouts(t, testRollbackReleasesToken)
}

func testRollbackReleasesToken(t *testing.T, layout inbox.Layout) {
	b := setup(t, inbox.Config{Layout: layout})
	ctx := context.Background()
	k := tok(t, "payment-7")
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := claim(t, b.store, tx, inbox.Request{Token: k}); got.Outcome != inbox.Fresh {
		t.Fatalf("got %v", got.Outcome)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	inTx(t, b.pool, func(tx pgx.Tx) {
		if got := claim(t, b.store, tx, inbox.Request{Token: k}); got.Outcome != inbox.Fresh {
			t.Fatalf("claim after rollback: got %v, want fresh", got.Outcome)
		}
	})
}

// TestConcurrentClaimWaits proves the in-flight lock: a second claim of a
// token held by an open transaction waits, then sees that transaction's
// outcome.
func TestConcurrentClaimWaits(t *testing.T) {
	t.Parallel()
	layouts(t, testConcurrentClaimWaits)
}

func testConcurrentClaimWaits(t *testing.T, layout inbox.Layout) {
	for _, commit := range []bool{true, false} {
		t.Run(fmt.Sprintf("commit=%v", commit), func(t *testing.T) {
			t.Parallel()
			b := setup(t, inbox.Config{Layout: layout})
			ctx := context.Background()
			k := tok(t, "click-1")
			if layout == inbox.LayoutPartitioned {
				k = inbox.UUIDToken(uuidAt(time.Now()))
			}
			first, err := b.pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer first.Rollback(ctx) //nolint:errcheck
			if got := claim(t, b.store, first, inbox.Request{Token: k}); got.Outcome != inbox.Fresh {
				t.Fatalf("first: got %v", got.Outcome)
			}

			second, err := b.pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer second.Rollback(ctx) //nolint:errcheck
			var secondPID uint32
			if err := second.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&secondPID); err != nil {
				t.Fatal(err)
			}
			type res struct {
				c   inbox.Claimed
				err error
			}
			done := make(chan res, 1)
			go func() {
				c, err := b.store.Claim(ctx, second, inbox.Request{Token: k})
				done <- res{c, err}
			}()

			// Wait until the second claim is blocked on the first's lock.
			waitFor(t, 10*time.Second, func() bool {
				var waiting bool
				err := b.pool.QueryRow(ctx, "SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1", secondPID).Scan(&waiting)
				return err == nil && waiting
			})
			select {
			case r := <-done:
				t.Fatalf("second claim returned while the first was open: %+v", r)
			default:
			}
			if commit {
				err = first.Commit(ctx)
			} else {
				err = first.Rollback(ctx)
			}
			if err != nil {
				t.Fatal(err)
			}
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			want := inbox.Duplicate
			if !commit {
				want = inbox.Fresh
			}
			if r.c.Outcome != want {
				t.Fatalf("second claim after the first ended: got %v, want %v", r.c.Outcome, want)
			}
		})
	}
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestConcurrentClaimsOneWinner has many goroutines claim overlapping
// batches and write an effect per fresh claim in the same transaction. The
// database must hold exactly one effect per token.
func TestConcurrentClaimsOneWinner(t *testing.T) {
	t.Parallel()
	layouts(t, testConcurrentClaimsOneWinner)
}

func testConcurrentClaimsOneWinner(t *testing.T, layout inbox.Layout) {
	b := setup(t, inbox.Config{Layout: layout})
	ctx := context.Background()
	effects := pgx.Identifier{b.cfg.Schema, "effects"}.Sanitize()
	if _, err := b.pool.Exec(ctx, "CREATE TABLE "+effects+" (token text NOT NULL, worker int NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	const tokens, workers, rounds, batch = 300, 8, 30, 25
	// In the partitioned layout, UUIDv7 tokens on both sides of a partition
	// boundary (tomorrow 00:00 UTC, a partition made ahead), half in each.
	pool := make([]inbox.Token, tokens)
	boundary := time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
	for i := range pool {
		pool[i] = tok(t, fmt.Sprintf("tok-%d", i))
		if layout == inbox.LayoutPartitioned {
			pool[i] = inbox.UUIDToken(uuidAt(boundary.Add(time.Duration(i-tokens/2) * time.Millisecond)))
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range rounds {
				reqs := make([]inbox.Request, batch)
				names := make([]string, batch)
				for i := range reqs {
					k := pool[rng.IntN(tokens)]
					names[i] = k.String()
					reqs[i] = inbox.Request{Token: k}
				}
				if err := claimAndApply(ctx, b, effects, w, reqs, names); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var dupes, distinct int
	if err := b.pool.QueryRow(ctx, "SELECT count(*) - count(DISTINCT token), count(DISTINCT token) FROM "+effects).Scan(&dupes, &distinct); err != nil {
		t.Fatal(err)
	}
	var claimed int
	if err := b.pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{b.cfg.Schema, b.cfg.Table}.Sanitize()).Scan(&claimed); err != nil {
		t.Fatal(err)
	}
	if dupes != 0 || distinct != claimed {
		t.Fatalf("effects: %d duplicated, %d distinct; inbox holds %d tokens", dupes, distinct, claimed)
	}
	if distinct < tokens/2 {
		t.Fatalf("only %d distinct tokens applied; the test did not exercise overlap", distinct)
	}
}

// claimAndApply retries deadlocks: overlapping batches that lock keys in
// different orders can deadlock, and Postgres aborts one of them.
func claimAndApply(ctx context.Context, b bundle, effects string, worker int, reqs []inbox.Request, names []string) error {
	for attempt := 0; ; attempt++ {
		err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
			got, err := b.store.ClaimBatch(ctx, tx, reqs)
			if err != nil {
				return err
			}
			for i, c := range got {
				if c.Outcome == inbox.Fresh {
					if _, err := tx.Exec(ctx, "INSERT INTO "+effects+" VALUES ($1, $2)", names[i], worker); err != nil {
						return err
					}
				}
			}
			return nil
		})
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001") && attempt < 20 {
			continue
		}
		return err
	}
}

func TestMigrateConcurrentAndRepeated(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	cfg := inbox.Config{Schema: pgtest.Schema(t, pool)}
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- inbox.Migrate(ctx, pool, cfg)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate: %v", err)
		}
	}
	if err := inbox.Migrate(ctx, pool, cfg); err != nil {
		t.Fatalf("repeated Migrate: %v", err)
	}
	line, err := inbox.Migrations(cfg)
	if err != nil {
		t.Fatal(err)
	}
	states, err := migrate.Status(ctx, pool, line)
	if err != nil {
		t.Fatal(err)
	}
	if len(states) == 0 {
		t.Fatal("no migrations reported")
	}
	for _, s := range states {
		if s.AppliedAt.IsZero() {
			t.Fatalf("migration %d %s not applied", s.Version, s.Name)
		}
	}
	var rows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{cfg.Schema, migrate.TrackingTable}.Sanitize()).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != len(states) {
		t.Fatalf("tracking table has %d rows, want %d", rows, len(states))
	}

	// Down goes one step, and the table is gone; Up brings it back.
	for range states {
		if _, err := migrate.Down(ctx, pool, line); err != nil {
			t.Fatalf("Down: %v", err)
		}
	}
	if _, err := migrate.Down(ctx, pool, line); !errors.Is(err, migrate.ErrNothingApplied) {
		t.Fatalf("Down with nothing applied: got %v", err)
	}
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", pgx.Identifier{cfg.Schema, "inbox"}.Sanitize()).Scan(&exists); err != nil || exists {
		t.Fatalf("after Down the inbox table exists=%v (err %v)", exists, err)
	}
	if err := inbox.Migrate(ctx, pool, cfg); err != nil {
		t.Fatalf("Migrate after Down: %v", err)
	}
}

// TestHostileNames runs the whole API against schema and table names made to
// break naive SQL building.
func TestHostileNames(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	schema := pgtest.Schema(t, pool) + `"; DROP SCHEMA public; --`
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	})
	b := setup(t, inbox.Config{Schema: schema, Table: `In"box Ü; SELECT 1`})
	ctx := context.Background()
	inTx(t, b.pool, func(tx pgx.Tx) {
		if got := claim(t, b.store, tx, inbox.Request{Token: tok(t, "x")}); got.Outcome != inbox.Fresh {
			t.Fatalf("got %v", got.Outcome)
		}
	})
	if _, err := b.store.Prune(ctx, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	var publicExists bool
	if err := pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'public')").Scan(&publicExists); err != nil || !publicExists {
		t.Fatalf("public schema exists=%v err=%v", publicExists, err)
	}

	for _, cfg := range []inbox.Config{
		{Table: string(make([]byte, 64))},
		{Schema: "a\x00b"},
		{Table: "this_table_name_is_fine_alone_but_too_long_with_its_index_suffix"},
		{PruneBatchSize: -1},
	} {
		if _, err := inbox.New(pool, cfg); err == nil {
			t.Errorf("New(%+v) succeeded, want an error", cfg)
		}
	}
	if _, err := inbox.New(nil, inbox.Config{}); err == nil {
		t.Error("New(nil) succeeded")
	}
}

func TestPruneUnderConcurrentClaims(t *testing.T) {
	t.Parallel()
	layouts(t, testPruneUnderConcurrentClaims)
}

// testPruneUnderConcurrentClaims prunes text tokens: in the partitioned
// layout they are pruned row by row too.
func testPruneUnderConcurrentClaims(t *testing.T, layout inbox.Layout) {
	b := setup(t, inbox.Config{PruneBatchSize: 7, Layout: layout})
	ctx := context.Background()
	table := pgx.Identifier{b.cfg.Schema, b.cfg.Table}.Sanitize()
	const old = 100
	inTx(t, b.pool, func(tx pgx.Tx) {
		reqs := make([]inbox.Request, old)
		for i := range reqs {
			reqs[i] = inbox.Request{Token: tok(t, fmt.Sprintf("old-%d", i))}
		}
		if _, err := b.store.ClaimBatch(ctx, tx, reqs); err != nil {
			t.Fatal(err)
		}
	})
	if _, err := b.pool.Exec(ctx, "UPDATE "+table+" SET processed_at = now() - interval '40 days'"); err != nil {
		t.Fatal(err)
	}
	// Another scope's old tokens are not this store's to prune.
	other := b.store.WithScope("other")
	inTx(t, b.pool, func(tx pgx.Tx) { claim(t, other, tx, inbox.Request{Token: tok(t, "old-0")}) })
	if _, err := b.pool.Exec(ctx, "UPDATE "+table+" SET processed_at = now() - interval '40 days' WHERE scope = 'other'"); err != nil {
		t.Fatal(err)
	}

	cutoff := time.Now().Add(-30 * 24 * time.Hour)
	n, err := b.store.PruneCount(ctx, cutoff)
	if err != nil || n != old {
		t.Fatalf("PruneCount: %d, %v; want %d", n, err, old)
	}

	const fresh = 200
	var wg sync.WaitGroup
	wg.Add(1)
	claimErr := make(chan error, 1)
	go func() {
		defer wg.Done()
		for i := range fresh {
			err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
				c, err := b.store.Claim(ctx, tx, inbox.Request{Token: tok(t, fmt.Sprintf("new-%d", i))})
				if err == nil && c.Outcome != inbox.Fresh {
					err = fmt.Errorf("new-%d: %v", i, c.Outcome)
				}
				return err
			})
			if err != nil {
				claimErr <- err
				return
			}
		}
	}()
	deleted, err := b.store.Prune(ctx, cutoff)
	wg.Wait()
	close(claimErr)
	if err := <-claimErr; err != nil {
		t.Fatal(err)
	}
	if err != nil || deleted != old {
		t.Fatalf("Prune deleted %d (err %v), want %d", deleted, err, old)
	}
	var mine, others int
	if err := b.pool.QueryRow(ctx, "SELECT count(*) FILTER (WHERE scope = $1), count(*) FILTER (WHERE scope <> $1) FROM "+table, b.cfg.Scope).Scan(&mine, &others); err != nil {
		t.Fatal(err)
	}
	if mine != fresh || others != 1 {
		t.Fatalf("after prune: %d tokens in scope (want %d new), %d in other scope (want 1)", mine, fresh, others)
	}
}

// TestRepeatableReadConcurrentCommit documents the behaviour under stricter
// isolation: the waiting claim fails with a serialization failure, which the
// caller retries, instead of double-applying.
func TestRepeatableReadConcurrentCommit(t *testing.T) {
	t.Parallel()
	layouts(t, testRepeatableReadConcurrentCommit)
}

func testRepeatableReadConcurrentCommit(t *testing.T, layout inbox.Layout) {
	b := setup(t, inbox.Config{Layout: layout})
	ctx := context.Background()
	k := tok(t, "rr")
	first, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Rollback(ctx) //nolint:errcheck
	claim(t, b.store, first, inbox.Request{Token: k})
	second, err := b.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Rollback(ctx)                              //nolint:errcheck
	if _, err := second.Exec(ctx, "SELECT 1"); err != nil { // take the snapshot now
		t.Fatal(err)
	}
	// Whether the claim waits on the open transaction or starts after its
	// commit, the committed token is invisible to second's snapshot.
	done := make(chan error, 1)
	go func() {
		_, err := b.store.Claim(ctx, second, inbox.Request{Token: k})
		done <- err
	}()
	if err := first.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	err = <-done
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "40001" {
		t.Fatalf("claim under REPEATABLE READ after a concurrent commit: got %v, want SQLSTATE 40001", err)
	}
}
