package inbox_test

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/pgtest"
	"github.com/exactlyhq/exactly/migrate"
)

const day = 24 * time.Hour

// uuidAt returns a UUIDv7 of time t, the rest random.
func uuidAt(t time.Time) [16]byte {
	var u [16]byte
	_, _ = crand.Read(u[:])
	ms := t.UnixMilli()
	for i := range 6 {
		u[i] = byte(ms >> (40 - 8*i))
	}
	u[6] = 0x70 | u[6]&0x0f
	u[8] = 0x80 | u[8]&0x3f
	return u
}

func v7At(t time.Time) inbox.Token { return inbox.UUIDToken(uuidAt(t)) }

// setupPartitioned creates a partitioned inbox without any time partition
// (migrate.Up, not inbox.Migrate): the state of a table whose partition job
// never ran.
func setupPartitioned(t *testing.T, cfg inbox.Config) bundle {
	t.Helper()
	pool := pgtest.Pool(t)
	cfg.Layout = inbox.LayoutPartitioned
	if cfg.Schema == "" {
		cfg.Schema = pgtest.Schema(t, pool)
	}
	line, err := inbox.Migrations(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate.Up(context.Background(), pool, line); err != nil {
		t.Fatal(err)
	}
	store, err := inbox.New(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return bundle{pool: pool, store: store, cfg: store.Config()}
}

// where returns the name of the partition that holds k in the store's
// scope, or "" when no row holds it.
func where(t *testing.T, b bundle, k inbox.Token) string {
	t.Helper()
	key := append([]byte{0}, uuidBytes(t, k)...)
	if _, ok := k.Time(); !ok {
		key[0] = 3 // a UUID that is not version 7
	}
	var name string
	err := b.pool.QueryRow(context.Background(), "SELECT c.relname::text FROM "+pgx.Identifier{b.cfg.Schema, b.cfg.Table}.Sanitize()+
		" t JOIN pg_catalog.pg_class c ON c.oid = t.tableoid WHERE t.scope = $1 AND t.token = $2", b.cfg.Scope, key).Scan(&name)
	if errors.Is(err, pgx.ErrNoRows) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return name
}

func uuidBytes(t *testing.T, k inbox.Token) []byte {
	t.Helper()
	u, err := uuid.Parse(k.String())
	if err != nil {
		t.Fatalf("%s is not a UUID token: %v", k, err)
	}
	return u[:]
}

// claimAll claims ks in one transaction, commits, and returns the outcomes.
func claimAll(t *testing.T, b bundle, ks ...inbox.Token) []inbox.Outcome {
	t.Helper()
	reqs := make([]inbox.Request, len(ks))
	for i, k := range ks {
		reqs[i] = inbox.Request{Token: k, Fingerprint: []byte(k.String())}
	}
	var out []inbox.Outcome
	inTx(t, b.pool, func(tx pgx.Tx) {
		got, err := b.store.ClaimBatch(context.Background(), tx, reqs)
		if err != nil {
			t.Fatalf("ClaimBatch: %v", err)
		}
		for _, c := range got {
			out = append(out, c.Outcome)
		}
	})
	return out
}

func wantOutcomes(t *testing.T, what string, got []inbox.Outcome, want ...inbox.Outcome) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

func partitionName(table string, from time.Time) string {
	return table + "_p" + from.UTC().Format("20060102_1504")
}

func names(ps []inbox.Partition) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

func dayStart(t time.Time) time.Time { return t.UTC().Truncate(day) }

// TestPartitionedRouting: UUIDv7 tokens land in the partition of their time,
// every other token in the "other" partition, UUIDv7 tokens without a
// partition (far ahead, long ago) in the default one; each is a duplicate
// when claimed again, wherever it is.
func TestPartitionedRouting(t *testing.T) {
	t.Parallel()
	b := setup(t, inbox.Config{Layout: inbox.LayoutPartitioned})
	ctx := context.Background()
	now := time.Now()

	ps, err := b.store.Partitions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	today := dayStart(now)
	if len(ps) != 1+inbox.PartitionsAheadDefault || !ps[0].From.Equal(today) {
		t.Fatalf("Migrate created %v, want today and %d days ahead from %v", ps, inbox.PartitionsAheadDefault, today)
	}
	for i, p := range ps {
		if !p.From.Equal(today.Add(time.Duration(i)*day)) || !p.To.Equal(p.From.Add(day)) || p.Name != partitionName(b.cfg.Table, p.From) {
			t.Fatalf("partition %d is %+v, want day %d after %v", i, p, i, today)
		}
	}

	v7 := v7At(now)
	v4 := inbox.UUIDToken(uuid.New())
	text := tok(t, "order-1")
	digest, _ := inbox.DigestToken([]byte{1, 2, 3})
	ahead := v7At(now.Add(400 * day))
	ago := v7At(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC))
	all := []inbox.Token{v7, v4, text, digest, ahead, ago}
	wantOutcomes(t, "first claims", claimAll(t, b, all...), inbox.Fresh, inbox.Fresh, inbox.Fresh, inbox.Fresh, inbox.Fresh, inbox.Fresh)
	wantOutcomes(t, "second claims", claimAll(t, b, all...), inbox.Duplicate, inbox.Duplicate, inbox.Duplicate, inbox.Duplicate, inbox.Duplicate, inbox.Duplicate)

	if got, want := where(t, b, v7), partitionName(b.cfg.Table, today); got != want {
		t.Errorf("UUIDv7 of now is in %q, want %q", got, want)
	}
	if got := where(t, b, v4); got != b.cfg.Table+"_other" {
		t.Errorf("UUIDv4 is in %q, want the other partition", got)
	}
	for _, k := range []inbox.Token{ahead, ago} {
		if got := where(t, b, k); got != b.cfg.Table+"_default" {
			t.Errorf("UUIDv7 %s without a partition is in %q, want the default partition", k, got)
		}
	}
	var others int
	if err := b.pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{b.cfg.Schema, b.cfg.Table + "_other"}.Sanitize()).Scan(&others); err != nil || others != 3 {
		t.Fatalf("the other partition holds %d rows (%v), want 3: the UUIDv4, the text and the digest", others, err)
	}
	if tm, ok := v7.Time(); !ok || tm.UnixMilli() != now.UnixMilli() {
		t.Errorf("Time() of a UUIDv7 of %v = %v, %v", now, tm, ok)
	}
	if _, ok := v4.Time(); ok {
		t.Error("a UUIDv4 token has a Time")
	}
}

// TestPartitionBoundary: a token claimed 1ms before a period boundary and
// one at the boundary are found again after the boundary passed and after
// the partitions moved on; when the earlier period is dropped, its token is
// Expired, never fresh again.
func TestPartitionBoundary(t *testing.T) {
	t.Parallel()
	b := setup(t, inbox.Config{Layout: inbox.LayoutPartitioned})
	ctx := context.Background()
	boundary := dayStart(time.Now()).Add(day) // tomorrow, a partition made ahead
	before, at, after := v7At(boundary.Add(-time.Millisecond)), v7At(boundary), v7At(boundary.Add(time.Millisecond))
	wantOutcomes(t, "claims around the boundary", claimAll(t, b, before, at, after), inbox.Fresh, inbox.Fresh, inbox.Fresh)
	if got, want := where(t, b, before), partitionName(b.cfg.Table, boundary.Add(-day)); got != want {
		t.Fatalf("token 1ms before the boundary is in %q, want %q", got, want)
	}
	for _, k := range []inbox.Token{at, after} {
		if got, want := where(t, b, k), partitionName(b.cfg.Table, boundary); got != want {
			t.Fatalf("token at or after the boundary is in %q, want %q", got, want)
		}
	}
	// The job runs after the boundary: new partitions, none dropped.
	ch, err := b.store.CreatePartitionsAt(ctx, boundary.Add(time.Hour))
	if err != nil || len(ch.Created) != 1 {
		t.Fatalf("CreatePartitionsAt after the boundary: %+v, %v; want one new partition", ch, err)
	}
	wantOutcomes(t, "redeliveries after the boundary", claimAll(t, b, before, at, after), inbox.Duplicate, inbox.Duplicate, inbox.Duplicate)

	// Retire everything before the boundary.
	ch, err = b.store.DropPartitions(ctx, boundary)
	if err != nil || len(ch.Dropped) != 1 || ch.Dropped[0].To != boundary {
		t.Fatalf("DropPartitions(boundary): %+v, %v; want the day before it dropped", ch, err)
	}
	floor, err := b.store.Floor(ctx)
	if err != nil || !floor.Equal(boundary) {
		t.Fatalf("floor %v (%v), want %v", floor, err, boundary)
	}
	wantOutcomes(t, "redeliveries after the drop", claimAll(t, b, before, at, after), inbox.Expired, inbox.Duplicate, inbox.Duplicate)
	wantOutcomes(t, "a new token 1ms below the floor", claimAll(t, b, v7At(boundary.Add(-time.Millisecond))), inbox.Expired)
	if got := where(t, b, before); got != "" {
		t.Fatalf("an expired token was stored in %q", got)
	}
}

// TestCreationJobBehind: with no partition for the current period (the job
// last ran days ago) claims go to the default partition and duplicates are
// found; the next run creates the partition, moving those tokens into it,
// and they are still found.
func TestCreationJobBehind(t *testing.T) {
	t.Parallel()
	b := setupPartitioned(t, inbox.Config{})
	ctx := context.Background()
	now := time.Now()
	if ch, err := b.store.CreatePartitionsAt(ctx, now.Add(-10*day)); err != nil || len(ch.Created) != 4 {
		t.Fatalf("CreatePartitionsAt 10 days ago: %+v, %v", ch, err)
	}
	ks := []inbox.Token{v7At(now), v7At(now.Add(time.Second)), v7At(now.Add(2 * day))}
	wantOutcomes(t, "claims with no partition", claimAll(t, b, ks...), inbox.Fresh, inbox.Fresh, inbox.Fresh)
	for _, k := range ks {
		if got := where(t, b, k); got != b.cfg.Table+"_default" {
			t.Fatalf("%s is in %q, want the default partition", k, got)
		}
	}
	wantOutcomes(t, "redeliveries", claimAll(t, b, ks...), inbox.Duplicate, inbox.Duplicate, inbox.Duplicate)

	ch, err := b.store.CreatePartitions(ctx)
	if err != nil || len(ch.Created) != 4 || ch.Moved != 3 || len(ch.Skipped) != 0 || ch.Busy {
		t.Fatalf("CreatePartitions: %+v, %v; want 4 created, 3 tokens moved", ch, err)
	}
	for i, k := range ks {
		want := partitionName(b.cfg.Table, dayStart(now))
		if i == 2 {
			want = partitionName(b.cfg.Table, dayStart(now.Add(2*day)))
		}
		if got := where(t, b, k); got != want {
			t.Fatalf("after CreatePartitions %s is in %q, want %q", k, got, want)
		}
	}
	wantOutcomes(t, "redeliveries after the move", claimAll(t, b, ks...), inbox.Duplicate, inbox.Duplicate, inbox.Duplicate)
	assertNoGuards(t, b)
}

// TestCreateSkipsCrowdedRange: more than PartitionMoveLimit tokens of a
// range in the default partition keep it there (moving them would hold the
// table's lock too long); the next ranges get their partitions, and every
// token is still found.
func TestCreateSkipsCrowdedRange(t *testing.T) {
	t.Parallel()
	b := setupPartitioned(t, inbox.Config{})
	ctx := context.Background()
	now := time.Now()
	ks := make([]inbox.Token, inbox.PartitionMoveLimit+1)
	for i := range ks {
		ks[i] = v7At(now.Add(-time.Duration(i) * time.Microsecond))
	}
	for i := 0; i < len(ks); i += inbox.MaxBatch {
		got := claimAll(t, b, ks[i:min(i+inbox.MaxBatch, len(ks))]...)
		if slices.ContainsFunc(got, func(o inbox.Outcome) bool { return o != inbox.Fresh }) {
			t.Fatal("a new token was not fresh")
		}
	}
	ch, err := b.store.CreatePartitions(ctx)
	if err != nil || len(ch.Skipped) != 1 || !ch.Skipped[0].From.Equal(dayStart(now)) || len(ch.Created) != inbox.PartitionsAheadDefault || ch.Moved != 0 {
		t.Fatalf("CreatePartitions: %+v, %v; want today skipped, %d days ahead created", ch, err, inbox.PartitionsAheadDefault)
	}
	assertNoGuards(t, b)
	got := claimAll(t, b, ks[:1000]...)
	if slices.ContainsFunc(got, func(o inbox.Outcome) bool { return o != inbox.Duplicate }) {
		t.Fatal("a token of the skipped range was not a duplicate")
	}
	wantOutcomes(t, "a new token of the skipped range", claimAll(t, b, v7At(now)), inbox.Fresh)
}

// TestClockFarAhead: a token minted a year ahead goes to the default
// partition; when its period comes (the job runs a year later), the token
// moves into the new partition and is still a duplicate.
func TestClockFarAhead(t *testing.T) {
	t.Parallel()
	b := setup(t, inbox.Config{Layout: inbox.LayoutPartitioned})
	ctx := context.Background()
	later := time.Now().Add(365 * day)
	k := v7At(later)
	wantOutcomes(t, "claim of a token a year ahead", claimAll(t, b, k), inbox.Fresh)
	if got := where(t, b, k); got != b.cfg.Table+"_default" {
		t.Fatalf("token a year ahead is in %q, want the default partition", got)
	}
	ch, err := b.store.CreatePartitionsAt(ctx, later)
	if err != nil || ch.Moved != 1 {
		t.Fatalf("CreatePartitionsAt a year later: %+v, %v; want the token moved", ch, err)
	}
	if got, want := where(t, b, k), partitionName(b.cfg.Table, dayStart(later)); got != want {
		t.Fatalf("token is in %q, want %q", got, want)
	}
	wantOutcomes(t, "redelivery", claimAll(t, b, k), inbox.Duplicate)
	assertNoGuards(t, b)
}

// TestDropRaisesFloor: partitions older than the cut-off are dropped and
// the floor rises to the newest dropped bound. A token of a dropped
// partition, or any new UUIDv7 below the floor (a producer's clock far
// behind), is Expired; a token of a kept partition is a duplicate; tokens
// without a time are not affected.
func TestDropRaisesFloor(t *testing.T) {
	t.Parallel()
	b := setupPartitioned(t, inbox.Config{PartitionsAhead: 6})
	ctx := context.Background()
	now := time.Now()
	if _, err := b.store.CreatePartitionsAt(ctx, now.Add(-5*day)); err != nil {
		t.Fatal(err)
	}
	old, kept, current := v7At(now.Add(-4*day-day/2)), v7At(now.Add(-2*day-day/2)), v7At(now)
	text, v4 := tok(t, "old-text"), inbox.UUIDToken(uuid.New())
	wantOutcomes(t, "claims", claimAll(t, b, old, kept, current, text, v4), inbox.Fresh, inbox.Fresh, inbox.Fresh, inbox.Fresh, inbox.Fresh)

	cut := dayStart(now.Add(-3 * day))
	ch, err := b.store.DropPartitions(ctx, cut.Add(time.Hour)) // within day -3: it stays
	if err != nil || len(ch.Dropped) != 2 || !ch.Dropped[1].To.Equal(cut) {
		t.Fatalf("DropPartitions: %+v, %v; want days -5 and -4 dropped", ch, err)
	}
	ps, err := b.store.Partitions(ctx)
	if err != nil || len(ps) != 5 || !ps[0].From.Equal(cut) {
		t.Fatalf("after the drop: %v (%v), want 5 partitions from %v", names(ps), err, cut)
	}
	wantOutcomes(t, "claims after the drop", claimAll(t, b, old, kept, current, text, v4), inbox.Expired, inbox.Duplicate, inbox.Duplicate, inbox.Duplicate, inbox.Duplicate)
	wantOutcomes(t, "new tokens below the floor", claimAll(t, b, v7At(cut.Add(-time.Millisecond)), v7At(now.Add(-365*day))), inbox.Expired, inbox.Expired)
	wantOutcomes(t, "new tokens at the floor and without a time", claimAll(t, b, v7At(cut), tok(t, "new-text"), inbox.UUIDToken(uuid.New())), inbox.Fresh, inbox.Fresh, inbox.Fresh)

	// Dropping again with the same cut-off does nothing; the floor never
	// goes down.
	if ch, err := b.store.DropPartitions(ctx, cut.Add(-2*day)); err != nil || len(ch.Dropped) != 0 {
		t.Fatalf("second DropPartitions: %+v, %v", ch, err)
	}
	if floor, err := b.store.Floor(ctx); err != nil || !floor.Equal(cut) {
		t.Fatalf("floor %v (%v), want %v", floor, err, cut)
	}
}

// TestDropWaitsForClaimInFlight: a drop waits for a transaction that claimed
// a token of the partition; once it committed and the partition is gone,
// the token is Expired, never fresh. A transaction open longer than
// MaintenanceLockTimeout makes the drop fail and leaves everything in place.
func TestDropWaitsForClaimInFlight(t *testing.T) {
	t.Parallel()
	b := setupPartitioned(t, inbox.Config{})
	ctx := context.Background()
	now := time.Now()
	if _, err := b.store.CreatePartitionsAt(ctx, now.Add(-3*day)); err != nil {
		t.Fatal(err)
	}
	k := v7At(now.Add(-3 * day))
	cut := dayStart(now.Add(-2 * day))

	// Open longer than the lock timeout: the drop gives up.
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := claim(t, b.store, tx, inbox.Request{Token: k}); got.Outcome != inbox.Fresh {
		t.Fatalf("claim: %v", got.Outcome)
	}
	start := time.Now()
	_, err = b.store.DropPartitions(ctx, cut)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "55P03" || time.Since(start) < inbox.MaintenanceLockTimeout {
		t.Fatalf("DropPartitions behind an open claim: %v after %v, want lock_not_available after %v", err, time.Since(start), inbox.MaintenanceLockTimeout)
	}
	if ps, _ := b.store.Partitions(ctx); len(ps) != 4 {
		t.Fatalf("a failed drop changed the partitions: %v", names(ps))
	}
	if floor, _ := b.store.Floor(ctx); !floor.IsZero() {
		t.Fatalf("a failed drop raised the floor to %v", floor)
	}

	// Committed while the drop waits: the drop goes on after it.
	dropped := make(chan error, 1)
	go func() {
		ch, err := b.store.DropPartitions(ctx, cut)
		if err == nil && len(ch.Dropped) != 1 {
			err = fmt.Errorf("dropped %v, want one partition", names(ch.Dropped))
		}
		dropped <- err
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
	if err := <-dropped; err != nil {
		t.Fatal(err)
	}
	wantOutcomes(t, "the claimed token after its partition was dropped", claimAll(t, b, k), inbox.Expired)
}

// TestConcurrentMaintenance: many processes creating and dropping
// partitions at once create each partition once, drop each once, fail none,
// and leave no guard constraint behind.
func TestConcurrentMaintenance(t *testing.T) {
	t.Parallel()
	b := setupPartitioned(t, inbox.Config{})
	ctx := context.Background()
	now := time.Now()
	if _, err := b.store.CreatePartitionsAt(ctx, now.Add(-3*day)); err != nil {
		t.Fatal(err)
	}
	cut := dayStart(now)
	var (
		mu               sync.Mutex
		created, dropped []string
		wg               sync.WaitGroup
		errs             = make(chan error, 16)
	)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ch inbox.PartitionChanges
			var err error
			if i%2 == 0 {
				ch, err = b.store.CreatePartitions(ctx)
			} else {
				ch, err = b.store.DropPartitions(ctx, cut)
			}
			if err != nil {
				errs <- err
			}
			mu.Lock()
			created = append(created, names(ch.Created)...)
			dropped = append(dropped, names(ch.Dropped)...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent maintenance: %v", err)
	}
	// Some calls found the lock taken: run both once more, as the next
	// round of the job would.
	for _, fn := range []func() (inbox.PartitionChanges, error){
		func() (inbox.PartitionChanges, error) { return b.store.CreatePartitions(ctx) },
		func() (inbox.PartitionChanges, error) { return b.store.DropPartitions(ctx, cut) },
	} {
		ch, err := fn()
		if err != nil || ch.Busy {
			t.Fatalf("maintenance after the others: %+v, %v", ch, err)
		}
		created = append(created, names(ch.Created)...)
		dropped = append(dropped, names(ch.Dropped)...)
	}
	slices.Sort(created)
	slices.Sort(dropped)
	var want []string
	for i := range 1 + inbox.PartitionsAheadDefault {
		want = append(want, partitionName(b.cfg.Table, dayStart(now).Add(time.Duration(i)*day)))
	}
	// The first call, 3 days ago, made days -3 to 0: the others made the
	// days ahead, each once.
	if !slices.Equal(created, want[1:]) {
		t.Fatalf("created %v, want %v", created, want[1:])
	}
	ps, err := b.store.Partitions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names(ps), want) {
		t.Fatalf("partitions %v, want %v", names(ps), want)
	}
	wantDropped := []string{
		partitionName(b.cfg.Table, dayStart(now.Add(-3*day))),
		partitionName(b.cfg.Table, dayStart(now.Add(-2*day))),
		partitionName(b.cfg.Table, dayStart(now.Add(-1*day))),
	}
	if !slices.Equal(dropped, wantDropped) {
		t.Fatalf("dropped %v, want %v", dropped, wantDropped)
	}
	assertNoGuards(t, b)
}

// assertNoGuards fails when a guard constraint is left on the default
// partition.
func assertNoGuards(t *testing.T, b bundle) {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM pg_catalog.pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'c'",
		pgx.Identifier{b.cfg.Schema, b.cfg.Table + "_default"}.Sanitize()).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d check constraints left on the default partition (%v)", n, err)
	}
}

// TestPrunePartitioned: Prune deletes old tokens of the default and other
// partitions, in batches, and never touches the time partitions.
func TestPrunePartitioned(t *testing.T) {
	t.Parallel()
	b := setup(t, inbox.Config{Layout: inbox.LayoutPartitioned, PruneBatchSize: 2})
	ctx := context.Background()
	now := time.Now()
	inPartition, inDefault := v7At(now), v7At(now.Add(-400*day))
	ks := []inbox.Token{inPartition, inDefault, tok(t, "text"), inbox.UUIDToken(uuid.New()), mustDigest(t)}
	claimAll(t, b, ks...)
	if _, err := b.pool.Exec(ctx, "UPDATE "+pgx.Identifier{b.cfg.Schema, b.cfg.Table}.Sanitize()+" SET processed_at = now() - interval '40 days'"); err != nil {
		t.Fatal(err)
	}
	fresh := tok(t, "recent")
	claimAll(t, b, fresh)
	cut := now.Add(-30 * day)
	if n, err := b.store.PruneCount(ctx, cut); err != nil || n != 4 {
		t.Fatalf("PruneCount: %d, %v; want 4", n, err)
	}
	if n, err := b.store.Prune(ctx, cut); err != nil || n != 4 {
		t.Fatalf("Prune: %d, %v; want 4", n, err)
	}
	if got := where(t, b, inPartition); got == "" {
		t.Fatal("Prune deleted a token of a time partition")
	}
	wantOutcomes(t, "after the prune", claimAll(t, b, inPartition, inDefault, fresh), inbox.Duplicate, inbox.Fresh, inbox.Duplicate)
}

func mustDigest(t *testing.T) inbox.Token {
	d, err := inbox.DigestToken([]byte("payload digest"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestLayoutMismatch: a Store refuses a table of the other layout instead
// of keying tokens differently from the processes that created them.
func TestLayoutMismatch(t *testing.T) {
	t.Parallel()
	for _, l := range []inbox.Layout{inbox.LayoutSingle, inbox.LayoutPartitioned} {
		b := setup(t, inbox.Config{Layout: l})
		other := inbox.LayoutPartitioned
		if l == inbox.LayoutPartitioned {
			other = inbox.LayoutSingle
		}
		cfg := b.cfg
		cfg.Layout = other
		wrong, err := inbox.New(b.pool, cfg)
		if err != nil {
			t.Fatal(err)
		}
		tx, err := b.pool.Begin(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		_, err = wrong.Claim(context.Background(), tx, inbox.Request{Token: inbox.UUIDToken(uuid.New())})
		_ = tx.Rollback(context.Background())
		if !errors.Is(err, inbox.ErrLayout) {
			t.Errorf("%s Store on a %s table: got %v, want ErrLayout", other, l, err)
		}
		if got, err := inbox.DetectLayout(context.Background(), b.pool, b.cfg); err != nil || got != l {
			t.Errorf("DetectLayout: %q, %v; want %q", got, err, l)
		}
	}
}

// TestOldestPartitioned: the oldest UUIDv7 token's time counts as its claim.
func TestOldestPartitioned(t *testing.T) {
	t.Parallel()
	b := setupPartitioned(t, inbox.Config{})
	ctx := context.Background()
	now := time.Now()
	if _, err := b.store.CreatePartitionsAt(ctx, now.Add(-3*day)); err != nil {
		t.Fatal(err)
	}
	if got, err := b.store.Oldest(ctx); err != nil || !got.IsZero() {
		t.Fatalf("Oldest of an empty scope: %v, %v", got, err)
	}
	two := now.Add(-2 * day)
	claimAll(t, b, tok(t, "text"), v7At(two), v7At(now))
	got, err := b.store.Oldest(ctx)
	if err != nil || got.UnixMilli() != two.UnixMilli() {
		t.Fatalf("Oldest: %v, %v; want %v", got, err, two)
	}
}

// TestPartitionedHostileNames runs partition maintenance on names made to
// break naive SQL building.
func TestPartitionedHostileNames(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	schema := pgtest.Schema(t, pool) + `"; DROP SCHEMA public; --`
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	})
	b := setup(t, inbox.Config{Schema: schema, Table: `In"box Ü; x`, Layout: inbox.LayoutPartitioned})
	ctx := context.Background()
	now := time.Now()
	k := v7At(now)
	wantOutcomes(t, "claim", claimAll(t, b, k, v7At(now.Add(2*day))), inbox.Fresh, inbox.Fresh)
	if ch, err := b.store.CreatePartitionsAt(ctx, now.Add(5*day)); err != nil || len(ch.Created) != 4 {
		t.Fatalf("CreatePartitionsAt: %+v, %v", ch, err)
	}
	if ch, err := b.store.DropPartitions(ctx, dayStart(now).Add(day)); err != nil || len(ch.Dropped) != 1 {
		t.Fatalf("DropPartitions: %+v, %v", ch, err)
	}
	wantOutcomes(t, "after the drop", claimAll(t, b, k), inbox.Expired)

	if _, err := inbox.New(pool, inbox.Config{Layout: inbox.LayoutPartitioned, Table: strings.Repeat("t", 39)}); err == nil {
		t.Error("a table name too long for the partitioned layout's index names was accepted")
	}
	if _, err := inbox.New(pool, inbox.Config{Layout: "sharded"}); err == nil {
		t.Error("an unknown layout was accepted")
	}
	if _, err := inbox.New(pool, inbox.Config{PartitionPeriod: 90 * time.Second}); err == nil {
		t.Error("a partition period that is not whole minutes was accepted")
	}
}

// TestDropLeftDetached: a partition left detached by a run that stopped
// between detaching and dropping is dropped by the next run; a table of the
// schema whose name only looks alike is not.
func TestDropLeftDetached(t *testing.T) {
	t.Parallel()
	b := setup(t, inbox.Config{Layout: inbox.LayoutPartitioned})
	ctx := context.Background()
	ps, err := b.store.Partitions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last := pgx.Identifier{b.cfg.Schema, ps[len(ps)-1].Name}.Sanitize()
	lookalike := pgx.Identifier{b.cfg.Schema, b.cfg.Table + "_payments"}.Sanitize()
	for _, stmt := range []string{
		"ALTER TABLE " + pgx.Identifier{b.cfg.Schema, b.cfg.Table}.Sanitize() + " DETACH PARTITION " + last,
		"CREATE TABLE " + lookalike + " (id int)",
	} {
		if _, err := b.pool.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	if ch, err := b.store.DropPartitions(ctx, time.Unix(0, 0)); err != nil || len(ch.Dropped) != 0 {
		t.Fatalf("DropPartitions: %+v, %v", ch, err)
	}
	var detached, other bool
	if err := b.pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL", last, lookalike).Scan(&detached, &other); err != nil {
		t.Fatal(err)
	}
	if detached || !other {
		t.Fatalf("after DropPartitions: detached partition exists=%v (want false), %s exists=%v (want true)", detached, lookalike, other)
	}
}
