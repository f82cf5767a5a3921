package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/pgtest"
)

// v7At returns a UUIDv7 token of time tm.
func v7At(tm time.Time) inbox.Token {
	var u [16]byte
	_, _ = rand.Read(u[:])
	ms := tm.UnixMilli()
	for i := range 6 {
		u[i] = byte(ms >> (40 - 8*i))
	}
	u[6] = 0x70 | u[6]&0x0f
	u[8] = 0x80 | u[8]&0x3f
	return inbox.UUIDToken(u)
}

// TestPrunePartitioned: migrate up -inbox-layout partitioned creates the
// table and its coming partitions; later commands find the layout by
// themselves; prune drops the partitions older than -older-than (a dry run
// only lists them), and a token of a dropped partition is then expired.
func TestPrunePartitioned(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t)
	schema := pgtest.Schema(t, pool)
	code, out, errOut := cli(t, "migrate", "up", "-schema", schema, "-inbox-layout", "partitioned")
	if code != 0 || strings.Count(out, "created partition") != 1+inbox.PartitionsAheadDefault || !strings.Contains(out, "applied inbox_partitioned 001") {
		t.Fatalf("migrate up: exit %d, %q\n%s", code, errOut, out)
	}
	code, out, _ = cli(t, "migrate", "status", "-schema", schema)
	if code != 0 || !strings.Contains(out, "inbox_partitioned") {
		t.Fatalf("migrate status did not find the partitioned layout: exit %d\n%s", code, out)
	}

	// A partition three days old, with a token in it.
	old := time.Now().UTC().Truncate(24 * time.Hour).Add(-3 * 24 * time.Hour)
	if _, err := pool.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s PARTITION OF %s FOR VALUES FROM ('\x00%012x') TO ('\x00%012x')`,
		pgx.Identifier{schema, "inbox_p" + old.Format("20060102_1504")}.Sanitize(), pgx.Identifier{schema, "inbox"}.Sanitize(),
		old.UnixMilli(), old.Add(24*time.Hour).UnixMilli())); err != nil {
		t.Fatal(err)
	}
	store, err := inbox.New(pool, inbox.Config{Schema: schema, Scope: "s", Layout: inbox.LayoutPartitioned})
	if err != nil {
		t.Fatal(err)
	}
	k := v7At(old.Add(time.Hour))
	claim := func() inbox.Outcome {
		var c inbox.Claimed
		inTx(t, pool, func(tx pgx.Tx) (err error) {
			c, err = store.Claim(ctx, tx, inbox.Request{Token: k})
			return err
		})
		return c.Outcome
	}
	if got := claim(); got != inbox.Fresh {
		t.Fatalf("claim: %v", got)
	}

	var pr pruneResult
	cliJSON(t, &pr, "prune", "-schema", schema, "-older-than", "2d", "-dry-run")
	if len(pr.PartitionsDropped) != 1 || !pr.DryRun || claim() != inbox.Duplicate {
		t.Fatalf("dry run: %+v; want one partition listed, none dropped", pr)
	}
	cliJSON(t, &pr, "prune", "-schema", schema, "-older-than", "2d")
	if len(pr.PartitionsDropped) != 1 || pr.PartitionsDropped[0].From != old || len(pr.PartitionsCreated) != 0 || pr.Total != 0 {
		t.Fatalf("prune: %+v; want the old partition dropped, nothing created, no row deleted", pr)
	}
	if got := claim(); got != inbox.Expired {
		t.Fatalf("claim after prune: %v, want expired", got)
	}
	code, out, _ = cli(t, "prune", "-schema", schema, "-older-than", "2d")
	if code != 0 || !strings.Contains(out, "deleted 0 tokens") || strings.Contains(out, "dropped partition") {
		t.Fatalf("second prune: exit %d\n%s", code, out)
	}
}

// TestPruneDeadLettersAndPublished: resolved dead letters and published
// outbox rows older than the ages given are deleted; unresolved dead
// letters, unpublished rows and younger ones stay.
func TestPruneDeadLettersAndPublished(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t)
	schema := pgtest.Schema(t, pool)
	if code, _, errOut := cli(t, "migrate", "up", "-schema", schema); code != 0 {
		t.Fatal(errOut)
	}
	for _, stmt := range []string{
		`INSERT INTO %s.dead_letters (scope, reason, error, attempts, kafka_topic, kafka_partition, kafka_offset, resolved_at, resolution)
		 VALUES ('a', 'r', 'e', 1, 't', 0, 1, now() - interval '10 days', 'discarded'),
		        ('b', 'r', 'e', 1, 't', 0, 2, now() - interval '10 days', 'replayed'),
		        ('a', 'r', 'e', 1, 't', 0, 3, NULL, NULL),
		        ('a', 'r', 'e', 1, 't', 0, 4, now() - interval '1 day', 'discarded')`,
		`INSERT INTO %s.outbox_dead_letters (id, shard, message_id, topic, headers, created_at, attempts, reason, error, resolved_at, resolution)
		 VALUES (1, 0, gen_random_uuid(), 't', '[]', now(), 1, 'r', 'e', now() - interval '10 days', 'discarded'),
		        (2, 0, gen_random_uuid(), 't', '[]', now(), 1, 'r', 'e', NULL, NULL)`,
		`INSERT INTO %s.outbox (shard, message_id, topic, published_at)
		 VALUES (0, gen_random_uuid(), 't', now() - interval '10 days'), (0, gen_random_uuid(), 't', now() - interval '10 days'),
		        (0, gen_random_uuid(), 't', now() - interval '1 day'), (0, gen_random_uuid(), 't', NULL)`,
	} {
		if _, err := pool.Exec(ctx, fmt.Sprintf(stmt, pgx.Identifier{schema}.Sanitize())); err != nil {
			t.Fatal(err)
		}
	}
	var pr pruneResult
	cliJSON(t, &pr, "prune", "-schema", schema, "-dead-letters-older-than", "7d", "-published-older-than", "7d", "-dry-run")
	if pr.DeadLetters == nil || *pr.DeadLetters != 2 || *pr.OutboxDeadLetters != 1 || *pr.Published != 2 || pr.Before != nil {
		t.Fatalf("dry run: %+v", pr)
	}
	cliJSON(t, &pr, "prune", "-schema", schema, "-dead-letters-older-than", "7d", "-published-older-than", "7d", "-batch", "1")
	if *pr.DeadLetters != 2 || *pr.OutboxDeadLetters != 1 || *pr.Published != 2 {
		t.Fatalf("prune: %+v", pr)
	}
	for table, want := range map[string]int{"dead_letters": 2, "outbox_dead_letters": 1, "outbox": 2} {
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, table}.Sanitize()).Scan(&n); err != nil || n != want {
			t.Errorf("%s: %d rows left (%v), want %d", table, n, err, want)
		}
	}
	if code, _, errOut := cli(t, "prune", "-schema", schema, "-dead-letters-older-than", "30m"); code != exitUsage || !strings.Contains(errOut, "below 1h") {
		t.Errorf("a dead-letter age below the floor: exit %d, %q", code, errOut)
	}
}

// TestMigratePartitionInbox: a single-table inbox converted by the command
// keeps its tokens, and later commands find the partitioned layout.
func TestMigratePartitionInbox(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t)
	schema := pgtest.Schema(t, pool)
	if code, _, errOut := cli(t, "migrate", "up", "-schema", schema); code != 0 {
		t.Fatal(errOut)
	}
	single, err := inbox.New(pool, inbox.Config{Schema: schema, Scope: "s"})
	if err != nil {
		t.Fatal(err)
	}
	ks := []inbox.Token{v7At(time.Now()), mustToken(t, "text"), mustToken(t, "0d0f8f5e-3c1a-4b2e-9a7f-1c2d3e4f5a6b")}
	inTx(t, pool, func(tx pgx.Tx) error {
		_, err := single.ClaimBatch(ctx, tx, []inbox.Request{{Token: ks[0]}, {Token: ks[1]}, {Token: ks[2]}})
		return err
	})
	var conv struct {
		Copied   int64
		OldTable string `json:"old_table"`
	}
	cliJSON(t, &conv, "migrate", "partition-inbox", "-schema", schema)
	if conv.Copied != 3 || !strings.Contains(conv.OldTable, "inbox_single") {
		t.Fatalf("partition-inbox: %+v", conv)
	}
	code, out, _ := cli(t, "migrate", "status", "-schema", schema)
	if code != 0 || !strings.Contains(out, "inbox_partitioned") || strings.Contains(out, "001_create_inbox ") {
		t.Fatalf("migrate status after the conversion: exit %d\n%s", code, out)
	}
	part, err := inbox.New(pool, inbox.Config{Schema: schema, Scope: "s", Layout: inbox.LayoutPartitioned})
	if err != nil {
		t.Fatal(err)
	}
	inTx(t, pool, func(tx pgx.Tx) error {
		got, err := part.ClaimBatch(ctx, tx, []inbox.Request{{Token: ks[0]}, {Token: ks[1]}, {Token: ks[2]}})
		for i, c := range got {
			if c.Outcome != inbox.Duplicate {
				t.Errorf("token %s after the conversion: %v", ks[i], c.Outcome)
			}
		}
		return err
	})
	if code, _, errOut := cli(t, "migrate", "partition-inbox", "-schema", schema); code == 0 || !strings.Contains(errOut, "partitioned already") {
		t.Errorf("a second conversion: exit %d, %q", code, errOut)
	}
}
