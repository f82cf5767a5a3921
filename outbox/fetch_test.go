package outbox

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/pgtest"
)

// TestFetchBoundedByBatchBytes: a relay reading a backlog of large rows
// reads at most its writer's BatchBytes per round (a row larger than that
// alone), however large BatchSize: 20 rows of 300 kB would otherwise be read
// whole, 6 MB per shard.
func TestFetchBoundedByBatchBytes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t)
	cfg := Config{Schema: pgtest.Schema(t, pool), Shards: 1}
	if err := Migrate(ctx, pool, cfg); err != nil {
		t.Fatal(err)
	}
	ob, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []Message
	for i := range 20 {
		msgs = append(msgs, Message{Topic: "large", Key: []byte{byte('a' + i)}, Value: make([]byte, 300_000)})
	}
	for i := range 3 {
		msgs = append(msgs, Message{Topic: "small", Key: []byte{byte('A' + i)}, Value: []byte("small")})
	}
	if _, err := ob.Enqueue(ctx, pool, msgs...); err != nil {
		t.Fatal(err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	// Rows become readable once every transaction older than theirs ended
	// (other tests share the cluster): wait for that first.
	all, err := NewRelay(pool, RelayConfig{Outbox: cfg, Brokers: kafkatest.Brokers()})
	if err != nil {
		t.Fatal(err)
	}
	waitReadable := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			rows, err := all.fetch(ctx, conn.Conn(), "SELECT id, message_id, topic, key, value, headers, created_at FROM "+
				pgx.Identifier{cfg.Schema, "outbox"}.Sanitize()+" WHERE xid < pg_snapshot_xmin(pg_current_snapshot())")
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d rows readable", len(rows), n)
			}
		}
	}
	waitReadable(len(msgs))

	for _, tc := range []struct {
		batchBytes int64
		batchSize  int
		blocked    [][]byte
		want       int
	}{
		{batchBytes: 0, want: 3},                                       // kafka-go's default 1 MiB: three rows of 300 kB fit, four do not
		{batchBytes: 1 << 20, want: 3},                                 // the same, set explicitly
		{batchBytes: 700_000, want: 2},                                 //
		{batchBytes: 100_000, want: 1},                                 // a row larger than BatchBytes comes alone
		{batchBytes: 100_000, blocked: [][]byte{[]byte("a")}, want: 1}, // blocked keys count nothing
		{batchBytes: 100 << 20, batchSize: 5, want: 5},                 // BatchSize still bounds the rows
		{batchBytes: 100 << 20, want: 23},                              //
	} {
		w := NewWriter(kafkatest.Brokers()...)
		w.BatchBytes = tc.batchBytes
		r, err := NewRelay(pool, RelayConfig{Outbox: cfg, Writer: w, BatchSize: tc.batchSize})
		if err != nil {
			t.Fatal(err)
		}
		rows, err := r.fetchPending(ctx, conn.Conn(), publisher{w: w}, 0, append([][]byte{}, tc.blocked...))
		if err != nil {
			t.Fatal(err)
		}
		var bytes int
		for _, x := range rows {
			bytes += len(x.key) + len(x.value) + len(x.headers)
		}
		limit := int(cmpOr(tc.batchBytes, 1<<20))
		if len(rows) != tc.want || len(rows) > 1 && bytes > limit {
			t.Errorf("BatchBytes %d, BatchSize %d, blocked %q: read %d rows of %d bytes, want %d rows of at most %d bytes",
				tc.batchBytes, tc.batchSize, tc.blocked, len(rows), bytes, tc.want, limit)
		}
		if len(tc.blocked) > 0 && len(rows) > 0 && string(rows[0].key) == string(tc.blocked[0]) {
			t.Errorf("read a row of blocked key %q", rows[0].key)
		}
		msgs, err := kafkaMessages(rows)
		if err != nil {
			t.Fatal(err)
		}
		if n := (publisher{w: w}).fit(msgs); n != len(rows) {
			t.Errorf("BatchBytes %d: read %d rows, but one write holds only %d of them", tc.batchBytes, len(rows), n)
		}
	}
	// Headers count too, also when Postgres stores them compressed (a
	// header of 300 kB of zeros takes a few kB): five such rows would be
	// 1.5 MB in memory.
	if _, err := pool.Exec(ctx, "DELETE FROM "+pgx.Identifier{cfg.Schema, "outbox"}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	msgs = nil
	for i := range 5 {
		msgs = append(msgs, Message{Topic: "headers", Key: []byte{byte('a' + i)}, Headers: []kafka.Header{{Key: "h", Value: make([]byte, 300_000)}}})
	}
	if _, err := ob.Enqueue(ctx, pool, msgs...); err != nil {
		t.Fatal(err)
	}
	waitReadable(len(msgs))
	w := NewWriter(kafkatest.Brokers()...)
	r, err := NewRelay(pool, RelayConfig{Outbox: cfg, Writer: w})
	if err != nil {
		t.Fatal(err)
	}
	rows, err := r.fetchPending(ctx, conn.Conn(), publisher{w: w}, 0, [][]byte{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := kafkaMessages(rows)
	if err != nil {
		t.Fatal(err)
	}
	var bytes int
	for _, m := range got {
		for _, h := range m.Headers {
			bytes += len(h.Value)
		}
	}
	if len(rows) < 1 || bytes > 1<<20 {
		t.Errorf("rows with 300 kB headers: read %d rows with %d bytes of header values, want at most 1 MiB", len(rows), bytes)
	}
}

func cmpOr(v, d int64) int64 {
	if v > 0 {
		return v
	}
	return d
}
