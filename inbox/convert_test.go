package inbox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/migrate"
)

// TestConvertToPartitioned: a single-table inbox converted in one
// transaction keeps every token (a UUIDv4 under its new key, a claim that
// was in flight when the conversion started); a UUIDv7 lands in the
// partition of its time; a Store of the single layout, even one that had
// checked the layout before, fails to claim instead of claiming fresh; the
// single table's migrations are forgotten, the partitioned ones applied.
func TestConvertToPartitioned(t *testing.T) {
	t.Parallel()
	b := setup(t, inbox.Config{})
	ctx := context.Background()
	now := time.Now()
	old := v7At(now.Add(-2 * day))
	ks := []inbox.Token{v7At(now), old, inbox.UUIDToken(uuid.New()), tok(t, "text"), mustDigest(t)}
	claimAll(t, b, ks...)
	if _, err := b.pool.Exec(ctx, "UPDATE "+pgx.Identifier{b.cfg.Schema, b.cfg.Table}.Sanitize()+" SET processed_at = now() - interval '2 days' WHERE token = $1",
		append([]byte{0}, uuidBytes(t, old)...)); err != nil {
		t.Fatal(err)
	}

	// A claim in flight: the conversion waits for it, then copies it.
	inFlight := v7At(now)
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if got := claim(t, b.store, tx, inbox.Request{Token: inFlight}); got.Outcome != inbox.Fresh {
		t.Fatalf("claim in flight: %v", got.Outcome)
	}
	type result struct {
		conv inbox.Conversion
		err  error
	}
	done := make(chan result, 1)
	go func() {
		conv, err := inbox.ConvertToPartitioned(ctx, b.pool, b.cfg)
		done <- result{conv, err}
	}()
	waitFor(t, 10*time.Second, func() bool {
		var waiting bool
		err := b.pool.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_catalog.pg_locks WHERE relation = to_regclass($1) AND NOT granted)",
			pgx.Identifier{b.cfg.Schema, b.cfg.Table}.Sanitize()).Scan(&waiting)
		return err == nil && waiting
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.conv.Copied != int64(len(ks)+1) || len(r.conv.Created) != 2+1+inbox.PartitionsAheadDefault {
		t.Fatalf("conversion: %+v; want %d tokens copied and partitions from 2 days ago to %d ahead", r.conv, len(ks)+1, inbox.PartitionsAheadDefault)
	}

	// The single layout's Store had checked the layout: its claim fails.
	_ = claimErr(t, b, b.store, v7At(now))
	fresh, err := inbox.New(b.pool, b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := claimErr(t, b, fresh, v7At(now)); !errors.Is(err, inbox.ErrLayout) {
		t.Fatalf("a new single-layout Store: %v, want ErrLayout", err)
	}

	cfg := b.cfg
	cfg.Layout = inbox.LayoutPartitioned
	p := bundle{pool: b.pool, cfg: cfg}
	if p.store, err = inbox.New(b.pool, cfg); err != nil {
		t.Fatal(err)
	}
	all := append(ks, inFlight)
	got := claimAll(t, p, all...)
	for i, o := range got {
		if o != inbox.Duplicate {
			t.Errorf("token %s after the conversion: %v, want duplicate", all[i], o)
		}
	}
	if got, want := where(t, p, old), partitionName(cfg.Table, dayStart(now.Add(-2*day))); got != want {
		t.Errorf("the 2-day-old token is in %q, want %q", got, want)
	}
	for _, l := range []inbox.Layout{inbox.LayoutSingle, inbox.LayoutPartitioned} {
		c := b.cfg
		c.Layout = l
		line, err := inbox.Migrations(c)
		if err != nil {
			t.Fatal(err)
		}
		states, err := migrate.Status(ctx, b.pool, line)
		if err != nil {
			t.Fatal(err)
		}
		if applied := !states[0].AppliedAt.IsZero(); applied != (l == inbox.LayoutPartitioned) {
			t.Errorf("%s migrations applied: %v", l, applied)
		}
	}
	var n int
	if err := b.pool.QueryRow(ctx, "SELECT count(*) FROM "+r.conv.Old).Scan(&n); err != nil || n != len(all) {
		t.Errorf("the old table %s holds %d rows (%v), want %d, kept", r.conv.Old, n, err, len(all))
	}
	if _, err := inbox.ConvertToPartitioned(ctx, b.pool, b.cfg); err == nil {
		t.Error("converting a partitioned inbox again succeeded")
	}
}

// claimErr claims k with s in a transaction it rolls back and fails the
// test unless the claim returns an error, which it returns.
func claimErr(t *testing.T, b bundle, s *inbox.Store, k inbox.Token) error {
	t.Helper()
	ctx := context.Background()
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	c, err := s.Claim(ctx, tx, inbox.Request{Token: k})
	if err == nil {
		t.Fatalf("a Store of the single layout claimed in the converted inbox: %v", c.Outcome)
	}
	return err
}
