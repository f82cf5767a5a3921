package inbox

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/exactlyhq/exactly/internal/pgtest"
)

// TestClaimPlan: whatever plan Postgres caches for the claim, a token that
// was not inserted is looked up by one primary-key probe, never by scanning
// the scope (which a generic plan made while the table was small did, and
// kept doing as the table grew). The plan is the generic one, forced, on a
// table without statistics: the situation that produced the scan.
func TestClaimPlan(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	schema := pgtest.Schema(t, pool)
	cfg := Config{Schema: schema, Scope: "plan"}
	ctx := context.Background()
	if err := Migrate(ctx, pool, cfg); err != nil {
		t.Fatal(err)
	}
	s, err := New(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan"); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, "RESET plan_cache_mode") //nolint:errcheck
	if _, err := conn.Exec(ctx, "PREPARE claim_plan AS "+s.sql.Claim); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, "DEALLOCATE claim_plan") //nolint:errcheck
	rows, err := conn.Query(ctx, `EXPLAIN EXECUTE claim_plan('plan', ARRAY['\x01aa'::bytea], ARRAY[NULL::bytea], ARRAY['t'], ARRAY[0], ARRAY[1::int8])`)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	plan := strings.Join(lines, "\n")
	table := s.cfg.Table
	if strings.Contains(plan, "Seq Scan on "+table) || strings.Contains(plan, "Bitmap Heap Scan on "+table) ||
		!strings.Contains(plan, "Index Scan using "+table+"_pkey on "+table+" x") {
		t.Fatalf("the claim's generic plan does not look tokens up by primary key:\n%s", plan)
	}
}

// TestPartitionedPlans: in the partitioned layout the claim statement plans
// no time partition (a generic plan opens and locks every partition it
// plans, on every execution), and the lookup of duplicates probes primary
// keys, never scans.
func TestPartitionedPlans(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	schema := pgtest.Schema(t, pool)
	cfg := Config{Schema: schema, Scope: "plan", Layout: LayoutPartitioned}
	ctx := context.Background()
	if err := Migrate(ctx, pool, cfg); err != nil {
		t.Fatal(err)
	}
	s, err := New(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan"); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, "RESET plan_cache_mode") //nolint:errcheck
	explain := func(name, query, args string) string {
		t.Helper()
		if _, err := conn.Exec(ctx, "PREPARE "+name+" AS "+query); err != nil {
			t.Fatal(err)
		}
		defer conn.Exec(ctx, "DEALLOCATE "+name) //nolint:errcheck
		rows, err := conn.Query(ctx, "EXPLAIN EXECUTE "+name+args)
		if err != nil {
			t.Fatal(err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(lines, "\n")
	}
	claim := explain("claim_plan", s.sql.ClaimPartitioned, `('plan', ARRAY['\x01aa'::bytea], ARRAY[NULL::bytea], ARRAY['t'], ARRAY[0], ARRAY[1::int8])`)
	if strings.Contains(claim, s.cfg.Table+"_p") || strings.Contains(claim, s.cfg.Table+"_default") {
		t.Fatalf("the claim's generic plan reads partitions:\n%s", claim)
	}
	lookup := explain("lookup_plan", s.sql.LookupPartitioned, `('plan', ARRAY['\x01aa'::bytea])`)
	if strings.Contains(lookup, "Seq Scan") || strings.Contains(lookup, "Bitmap Heap Scan") || !strings.Contains(lookup, "Index Scan using "+s.cfg.Table+"_other_pkey") {
		t.Fatalf("the lookup's generic plan does not probe primary keys:\n%s", lookup)
	}
}
