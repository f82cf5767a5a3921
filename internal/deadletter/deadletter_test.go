package deadletter

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/pgtest"
	"github.com/exactlyhq/exactly/migrate"
	"github.com/exactlyhq/exactly/outbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// setup migrates a fresh schema and returns a Store of it.
func setup(t *testing.T) (*Store, func(sql string, args ...any)) {
	t.Helper()
	pool := pgtest.Pool(t)
	schema := pgtest.Schema(t, pool)
	cl, err := consumer.Migrations(consumer.Config{Inbox: inbox.Config{Schema: schema}})
	if err != nil {
		t.Fatal(err)
	}
	ol, err := outbox.Migrations(outbox.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate.Up(context.Background(), pool, append(cl, ol)...); err != nil {
		t.Fatal(err)
	}
	s, err := New(pool, Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	exec := func(sql string, args ...any) {
		t.Helper()
		sql = strings.ReplaceAll(sql, "DL", pgx.Identifier{schema, consumer.DeadLetterTableDefault}.Sanitize())
		if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	return s, exec
}

// TestPages: pages newest first by keyset, filters, and the state of
// resolution.
func TestPages(t *testing.T) {
	t.Parallel()
	s, exec := setup(t)
	ctx := context.Background()
	exec(`INSERT INTO DL (scope, token, reason, error, attempts, kafka_topic, kafka_partition, kafka_offset, kafka_key, kafka_value, created_at)
		SELECT CASE WHEN i % 2 = 0 THEN 'even' ELSE 'odd' END, 't' || i, CASE WHEN i % 3 = 0 THEN 'permanent' ELSE 'handler_error' END,
			'boom', 1, 'orders', 0, i, convert_to(repeat('k', 300), 'UTF8'), '\x00ff'::bytea, now() - i * interval '1 minute'
		FROM generate_series(1, 10) AS i`)
	exec(`UPDATE DL SET resolved_at = now(), resolution = 'discarded' WHERE kafka_offset = 10`)

	page, err := s.ConsumerList(ctx, Filter{NewestFirst: true, Limit: 4})
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 4 || page[0].Token != "t9" || page[3].Token != "t6" {
		t.Fatalf("first page %+v, want t9..t6 (t10 resolved)", page)
	}
	if len(page[0].Key) != 256 || page[0].KeySize == nil || *page[0].KeySize != 300 || page[0].ValueSize != 2 || page[0].Value != nil {
		t.Fatalf("listed key %d bytes of %v, value %d bytes %q; want the key cut to 256 of 300, no value", len(page[0].Key), page[0].KeySize, page[0].ValueSize, page[0].Value)
	}
	next, err := s.ConsumerList(ctx, Filter{NewestFirst: true, Limit: 4, MaxID: page[3].ID - 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(next) != 4 || next[0].Token != "t5" {
		t.Fatalf("second page %+v, want from t5", next)
	}
	for _, tc := range []struct {
		f    Filter
		want int
	}{
		{Filter{Scope: "even"}, 4},
		{Filter{Reason: "permanent"}, 3},
		{Filter{Topic: "elsewhere"}, 0},
		{Filter{State: Resolved}, 1},
		{Filter{State: All}, 10},
		{Filter{Since: time.Now().Add(-210 * time.Second)}, 3},
		{Filter{Until: time.Now().Add(-210 * time.Second)}, 6},
		{Filter{IDs: []int64{page[1].ID, next[0].ID}}, 2},
	} {
		got, err := s.ConsumerList(ctx, tc.f)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != tc.want {
			t.Errorf("%+v: %d dead letters, want %d", tc.f, len(got), tc.want)
		}
	}
	if _, err := s.OutboxList(ctx, Filter{Scope: "even"}); err == nil {
		t.Error("outbox dead letters listed by scope")
	}
}

// TestPagePlan: a page deep in 100k dead letters is read from the primary
// key's index backwards, without sorting the table: as fast as the first.
func TestPagePlan(t *testing.T) {
	t.Parallel()
	s, exec := setup(t)
	exec(`INSERT INTO DL (scope, reason, error, attempts, kafka_topic, kafka_partition, kafka_offset)
		SELECT 'g', 'handler_error', 'boom', 1, 'orders', 0, i FROM generate_series(1, 100000) AS i`)
	exec(`ANALYZE DL`)
	for _, f := range []Filter{
		{NewestFirst: true, Limit: 50, MaxID: 50000},
		{NewestFirst: true, Limit: 50, MaxID: 50000, Reason: "handler_error", Topic: "orders"},
	} {
		args := append([]any{optional(f.Scope), optional(f.Topic)}, f.common()...)
		var plan []map[string]any
		if err := s.db.QueryRow(context.Background(), "EXPLAIN (FORMAT JSON) "+s.sql.ConsumerPage, args...).Scan(&plan); err != nil {
			t.Fatal(err)
		}
		text, _ := json.Marshal(plan)
		if !strings.Contains(string(text), `"Scan Direction":"Backward"`) || !strings.Contains(string(text), "_pkey") || strings.Contains(string(text), `"Node Type":"Sort"`) {
			t.Errorf("%+v: plan %s; want a backward scan of the primary key and no sort", f, text)
		}
	}
}
