package outbox_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/testhook"
	"github.com/exactlyhq/exactly/outbox"
)

// TestPublishIfAndOnlyIfCommitted: a rolled-back enqueue is never published;
// a committed one is published exactly as enqueued, with its message id and
// the trace context of the enqueuing code.
func TestPublishIfAndOnlyIfCommitted(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	ctx := context.Background()

	tx, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ob.EnqueueTx(ctx, tx, outbox.Message{Topic: b.topic, Key: []byte("k"), Value: []byte("rolled back")}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	otel.SetTextMapPropagator(propagation.TraceContext{})
	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	tctx := trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled}))
	var ids []string
	err = pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		ids, err = b.ob.EnqueueTx(tctx, tx,
			outbox.Message{Topic: b.topic, Key: []byte("k"), Value: []byte("committed 1"), Headers: []kafka.Header{{Key: "X-Custom", Value: []byte("v")}}},
			outbox.Message{Topic: b.topic, Key: []byte("k"), Value: []byte("committed 2")})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	startRelay(t, b.pool, b.relay)
	got := kafkatest.ReadAll(t, b.topic, 2, 2, 30*time.Second)
	for i, m := range got {
		if want := []string{"committed 1", "committed 2"}[i]; string(m.Value) != want || string(m.Key) != "k" {
			t.Errorf("message %d: key %q value %q, want k %q", i, m.Key, m.Value, want)
		}
		if id := kafkatest.Header(m, exactly.Header); id != ids[i] {
			t.Errorf("message %d: id header %q, want %q", i, id, ids[i])
		}
		if tp := kafkatest.Header(m, "traceparent"); !strings.Contains(tp, traceID.String()) {
			t.Errorf("message %d: traceparent %q does not carry trace %s", i, tp, traceID)
		}
	}
	if kafkatest.Header(got[0], "X-Custom") != "v" {
		t.Errorf("custom header lost: %v", got[0].Headers)
	}
	waitEmpty(t, b)
}

// waitEmpty waits until the relay removed every row.
func waitEmpty(t *testing.T, b bundle) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for countRows(t, b, "outbox") > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("outbox still holds %d rows", countRows(t, b, "outbox"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitPublished waits until the outbox holds no unpublished row (rows kept
// for audit stay).
func waitPublished(t *testing.T, b bundle) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var n int
		if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{b.schema, "outbox"}.Sanitize()+
			" WHERE published_at IS NULL").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox still holds %d unpublished rows", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOutOfOrderCommit: the transaction holding the smaller id commits last.
// Neither row is skipped, and they are published in id order.
func TestOutOfOrderCommit(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	startRelay(t, b.pool, b.relay)

	first, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Rollback(ctx) //nolint:errcheck
	if _, err := b.ob.EnqueueTx(ctx, first, outbox.Message{Topic: b.topic, Key: []byte("k"), Value: []byte("101")}); err != nil {
		t.Fatal(err)
	}
	enqueue(t, b, outbox.Message{Topic: b.topic, Key: []byte("k"), Value: []byte("102")})
	var committedAt time.Time
	if err := b.pool.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&committedAt); err != nil {
		t.Fatal(err)
	}
	// Wait until the relay has read the outbox after 102 committed: a relay
	// that skipped ahead would publish 102 now.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var polled bool
		err := b.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE query LIKE '%pg_snapshot_xmin%' AND query LIKE '%' || $1 || '%' AND state_change > $2)`, b.schema, committedAt).Scan(&polled)
		if err != nil {
			t.Fatal(err)
		}
		if polled {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the relay did not poll")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := first.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	got := kafkatest.ReadAll(t, b.topic, 1, 2, 30*time.Second)
	if string(got[0].Value) != "101" || string(got[1].Value) != "102" {
		t.Fatalf("published %q then %q, want 101 then 102", got[0].Value, got[1].Value)
	}
	waitEmpty(t, b)
}

// TestPollingOnly: with notifications off, polling alone publishes.
func TestPollingOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	cfg := b.ob.Config()
	cfg.NotifyWindow = -1
	quiet, err := outbox.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	startRelay(t, b.pool, b.relay)
	if _, err := quiet.Enqueue(context.Background(), b.pool, outbox.Message{Topic: b.topic, Value: []byte("polled")}); err != nil {
		t.Fatal(err)
	}
	got := kafkatest.ReadAll(t, b.topic, 1, 1, 30*time.Second)
	if string(got[0].Value) != "polled" {
		t.Fatalf("got %q", got[0].Value)
	}
}

// TestListenConnectionKilled: the relay re-establishes its LISTEN connection
// after it is terminated, and notifications wake it again (polling is set to
// an hour, so nothing else could).
func TestListenConnectionKilled(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	cfg := b.relay
	cfg.PollInterval = time.Hour
	startRelay(t, b.pool, cfg)
	channelPID := func() int {
		var pid int
		err := b.pool.QueryRow(ctx, `SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE query = $1`,
			"LISTEN "+pgx.Identifier{b.ob.Config().Channel()}.Sanitize()).Scan(&pid)
		if err != nil {
			t.Fatal(err)
		}
		return pid
	}
	waitPID := func(not int) int {
		deadline := time.Now().Add(30 * time.Second)
		for {
			if pid := channelPID(); pid != 0 && pid != not {
				return pid
			}
			if time.Now().After(deadline) {
				t.Fatal("no LISTEN connection")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	old := waitPID(0)
	enqueue(t, b, outbox.Message{Topic: b.topic, Value: []byte("before")})
	kafkatest.ReadAll(t, b.topic, 1, 1, 30*time.Second)
	if _, err := b.pool.Exec(ctx, "SELECT pg_terminate_backend($1)", old); err != nil {
		t.Fatal(err)
	}
	waitPID(old)
	enqueue(t, b, outbox.Message{Topic: b.topic, Value: []byte("after")})
	got := kafkatest.ReadAll(t, b.topic, 1, 2, 30*time.Second)
	if string(got[1].Value) != "after" {
		t.Fatalf("got %q", got[1].Value)
	}
}

// TestPollingWithoutListen: while the relay cannot LISTEN (its connection
// is held back at a test hook), polling alone publishes. Not parallel: the
// hook is process-wide, and sequential tests run before the parallel ones.
func TestPollingWithoutListen(t *testing.T) {
	b := setup(t, 1)
	release := make(chan struct{})
	testhook.Set("outbox.before-listen", func() { <-release })
	t.Cleanup(func() { testhook.Set("outbox.before-listen", nil) })
	cfg := b.relay
	cfg.PollInterval = 300 * time.Millisecond
	stop := startRelay(t, b.pool, cfg)
	t.Cleanup(func() { close(release); stop() }) // the hook must let go before the relay can stop
	// Enqueue only once every shard is owned and has looked at the empty
	// table: the row can then only be found by a later poll.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		shards, err := outbox.Shards(context.Background(), b.pool, cfg.Outbox)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(shards, func(s outbox.ShardStatus) bool { return !s.Owned }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("shards not all owned: %+v", shards)
		}
	}
	time.Sleep(time.Second)
	enqueue(t, b, outbox.Message{Topic: b.topic, Value: []byte("polled")})
	got := kafkatest.ReadAll(t, b.topic, 1, 1, 30*time.Second)
	var listening int
	if err := b.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE query = $1`,
		"LISTEN "+pgx.Identifier{b.ob.Config().Channel()}.Sanitize()).Scan(&listening); err != nil {
		t.Fatal(err)
	}
	if string(got[0].Value) != "polled" || listening != 0 {
		t.Fatalf("published %q with %d LISTEN connections, want %q published by polling alone", got[0].Value, listening, "polled")
	}
}

// TestOrderWhenAWriteIsRefused: the topic accepts record batches of at most
// 100 kB. Key k's first row shares a write with a 200 kB row and nine 90 kB
// rows; its second row comes after them. Kafka refuses the record batch
// holding the first row, so the second must not be published before it:
// were the write split by kafka-go (at 1 MiB), the second row would travel
// in a later batch that Kafka accepts. The same holds for key j, whose
// second row goes to another topic (another record batch) than its first.
func TestOrderWhenAWriteIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	topic := kafkatest.Topic(t, 1, kafka.ConfigEntry{ConfigName: "max.message.bytes", ConfigValue: "100000"})
	msgs := []outbox.Message{
		{Topic: topic, Key: []byte("j"), Value: make([]byte, 150_000)}, // refused: too large for topic
		{Topic: b.topic, Key: []byte("j"), Value: []byte("j-2")},
		{Topic: topic, Key: []byte("k"), Value: []byte("k-1")},
		{Topic: topic, Key: []byte("x"), Value: make([]byte, 200_000)},
	}
	for i := range 10 {
		msgs = append(msgs, outbox.Message{Topic: topic, Key: []byte{'f', byte('0' + i)}, Value: make([]byte, 90_000)})
	}
	msgs = append(msgs, outbox.Message{Topic: topic, Key: []byte("k"), Value: []byte("k-2")})
	enqueue(t, b, msgs...)
	// One shard, so that all rows go out in the same writes.
	if _, err := b.pool.Exec(context.Background(), "UPDATE "+pgx.Identifier{b.schema, "outbox"}.Sanitize()+" SET shard = 0"); err != nil {
		t.Fatal(err)
	}
	cfg := b.relay
	cfg.Outbox.Shards = 1
	cfg.MaxRejections = 1
	cfg.KeepPublished = time.Hour // rows keep when they were published
	startRelay(t, b.pool, cfg)
	got := kafkatest.ReadAll(t, topic, 1, 12, 60*time.Second)
	var k []string
	for _, m := range got {
		if string(m.Key) == "k" {
			k = append(k, string(m.Value))
		}
	}
	if strings.Join(k, ",") != "k-1,k-2" {
		t.Fatalf("key k published as %v, want k-1 then k-2", k)
	}
	// j's first row is refused and dead-lettered; only then may j-2 go.
	waitPublished(t, b)
	var deadAt, publishedAt time.Time
	if err := b.pool.QueryRow(context.Background(), "SELECT (SELECT dead_at FROM "+pgx.Identifier{b.schema, "outbox_dead_letters"}.Sanitize()+
		" WHERE key = 'j'), (SELECT published_at FROM "+pgx.Identifier{b.schema, "outbox"}.Sanitize()+" WHERE key = 'j')").Scan(&deadAt, &publishedAt); err != nil {
		t.Fatalf("j's rows: %v", err)
	}
	if !publishedAt.After(deadAt) {
		t.Fatalf("j-2 published at %v, before j's first row was given up at %v", publishedAt, deadAt)
	}
}

// TestPoisonRows: rows that can never be published (unknown topic, too
// large) are dead-lettered with their reason after MaxRejections rejections;
// other keys flow meanwhile (all of them are published while the poison rows
// still wait for their retries), and later rows of the poisoned keys follow
// in order. The first write holds good rows around the unknown-topic row
// (kafka-go fails a whole write for an unknown topic): the good rows are
// published again alone and count no rejection.
func TestPoisonRows(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	var msgs []outbox.Message
	good := func(n int) {
		for i := range n {
			msgs = append(msgs, outbox.Message{Topic: b.topic, Key: []byte{byte('a' + i%10)}, Value: []byte("good")})
		}
	}
	good(50)
	msgs = append(msgs,
		outbox.Message{Topic: "no-such-topic-" + b.schema, Key: []byte("bad"), Value: []byte("x")},
		outbox.Message{Topic: b.topic, Key: []byte("bad"), Value: []byte("after-1")})
	good(50)
	msgs = append(msgs,
		outbox.Message{Topic: b.topic, Key: []byte("huge"), Value: make([]byte, 2<<20)},
		outbox.Message{Topic: b.topic, Key: []byte("huge"), Value: []byte("after-2")})
	// A writer that lets a message through that Kafka refuses.
	lax := b.ob.Config()
	lax.MaxMessageBytes = 4 << 20
	var err error
	if b.ob, err = outbox.New(lax); err != nil {
		t.Fatal(err)
	}
	enqueue(t, b, msgs...)
	cfg := b.relay
	cfg.MaxRejections = 3
	// A rejected row is retried after RetryInitial<<rejections, at most
	// RetryMax: the poison rows are dead-lettered no sooner than 8s after
	// their first rejection, ample time for the other keys to flow.
	cfg.RetryInitial, cfg.RetryMax = 2*time.Second, 4*time.Second
	cfg.KeepPublished = time.Hour // published rows keep their attempt counts
	startRelay(t, b.pool, cfg)
	for _, m := range kafkatest.ReadAll(t, b.topic, 2, 100, 60*time.Second) {
		if string(m.Value) != "good" {
			t.Fatalf("%q published before the other keys' rows", m.Value)
		}
	}
	if n := countRows(t, b, "outbox_dead_letters"); n != 0 {
		t.Fatalf("the poison rows were dead-lettered (%d) before the other keys flowed: they blocked them", n)
	}
	got := kafkatest.ReadAll(t, b.topic, 2, 102, 60*time.Second)
	var after []string
	for _, m := range got {
		if strings.HasPrefix(string(m.Value), "after-") {
			after = append(after, string(m.Value))
		}
	}
	if len(after) != 2 {
		t.Fatalf("rows behind the poison rows: published %v, want after-1 and after-2", after)
	}
	waitPublished(t, b)
	// Rows that shared a write with a poison row were rejected with it; the
	// relay publishes them again alone, so they count no rejection.
	var innocent int
	if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{b.schema, "outbox"}.Sanitize()+
		" WHERE rejections > 0").Scan(&innocent); err != nil {
		t.Fatal(err)
	}
	if innocent != 0 {
		t.Errorf("%d published rows counted a rejection that was not theirs", innocent)
	}
	rows, err := b.pool.Query(context.Background(), "SELECT key, reason, rejections FROM "+pgx.Identifier{b.schema, "outbox_dead_letters"}.Sanitize()+" ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	var key []byte
	var reason string
	var rejections int
	var seen []string
	_, err = pgx.ForEachRow(rows, []any{&key, &reason, &rejections}, func() error {
		seen = append(seen, string(key)+":"+reason)
		if rejections != 3 {
			t.Errorf("dead letter %s: %d rejections, want 3", key, rejections)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(seen, ",") != "bad:unknown_topic,huge:too_large" {
		t.Fatalf("dead letters %v, want bad:unknown_topic and huge:too_large", seen)
	}
}

// TestKeepPublished: in audit mode published rows are marked, then pruned.
func TestKeepPublished(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	cfg := b.relay
	cfg.KeepPublished = time.Hour
	cfg.PruneBatchSize = 3
	cfg.Logger = testLogger(t)
	r, err := outbox.NewRelay(b.pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	startRelay(t, b.pool, cfg)
	var msgs []outbox.Message
	for range 10 {
		msgs = append(msgs, outbox.Message{Topic: b.topic, Value: []byte("audit")})
	}
	enqueue(t, b, msgs...)
	kafkatest.ReadAll(t, b.topic, 1, 10, 30*time.Second)
	var marked int
	deadline := time.Now().Add(30 * time.Second)
	for marked < 10 && time.Now().Before(deadline) {
		if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{b.schema, "outbox"}.Sanitize()+" WHERE published_at IS NOT NULL").Scan(&marked); err != nil {
			t.Fatal(err)
		}
	}
	if marked != 10 {
		t.Fatalf("%d rows marked published, want 10", marked)
	}
	n, err := r.PrunePublished(context.Background(), time.Now().Add(2*time.Hour))
	if err != nil || n != 10 || countRows(t, b, "outbox") != 0 {
		t.Fatalf("PrunePublished: %d, %v; %d rows left", n, err, countRows(t, b, "outbox"))
	}
}

func TestUnsafeWriterRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	for _, tc := range []struct {
		mutate func(*kafka.Writer)
		want   string
	}{
		{func(w *kafka.Writer) { w.RequiredAcks = kafka.RequireOne }, "RequireAll"},
		{func(w *kafka.Writer) { w.Async = true }, "Async"},
		{func(w *kafka.Writer) { w.Balancer = &kafka.RoundRobin{} }, "key-hash balancer"},
		{func(w *kafka.Writer) { w.Balancer = nil }, "round robin"},
		{func(w *kafka.Writer) { w.BatchTimeout = 0 }, "BatchTimeout"},
		{func(w *kafka.Writer) { w.Topic = "fixed" }, "Writer.Topic"},
	} {
		w := outbox.NewWriter(kafkatest.Brokers()...)
		tc.mutate(w)
		cfg := b.relay
		cfg.Writer = w
		_, err := outbox.NewRelay(b.pool, cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error mentioning %q", err, tc.want)
		}
	}
	cfg := b.relay
	cfg.Brokers = nil
	if _, err := outbox.NewRelay(b.pool, cfg); err == nil {
		t.Error("NewRelay without brokers or writer succeeded")
	}
	cfg = b.relay
	cfg.Writer, cfg.Transport = outbox.NewWriter(kafkatest.Brokers()...), &kafka.Transport{}
	if _, err := outbox.NewRelay(b.pool, cfg); err == nil || !strings.Contains(err.Error(), "RelayConfig.Transport") {
		t.Errorf("NewRelay with both Writer and Transport: %v", err)
	}
	cfg = b.relay
	cfg.Outbox.Schema = "never_migrated"
	r, err := outbox.NewRelay(b.pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Run on an unmigrated table: %v", err)
	}
	cfg = b.relay
	cfg.Brokers = []string{"127.0.0.1:1"}
	r, err = outbox.NewRelay(b.pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "no Kafka broker answers") {
		t.Errorf("Run without Kafka: %v", err)
	}
	noPostgres, err := pgxpool.New(context.Background(), "postgres://nobody:x@127.0.0.1:1/none?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer noPostgres.Close()
	r, err = outbox.NewRelay(noPostgres, b.relay)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "Postgres unreachable") {
		t.Errorf("Run without Postgres: %v", err)
	}
	// A table from before migration 002: refused before it could fail on
	// the first rejected row.
	old := pgx.Identifier{b.schema, "outbox"}.Sanitize()
	if _, err := b.pool.Exec(context.Background(), "ALTER TABLE "+old+" DROP COLUMN rejections"); err != nil {
		t.Fatal(err)
	}
	r, err = outbox.NewRelay(b.pool, b.relay)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "predates migration 002") {
		t.Errorf("Run on a table of migration 001: %v", err)
	}
}

func TestEnqueueValidation(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	for _, m := range []outbox.Message{
		{Value: []byte("no topic")},
		{Topic: b.topic, ID: "not-a-uuid"},
		{Topic: b.topic, ID: "0190c5a2-7b1e-7c3d-9e4f-a1b2c3d4e5f6", Headers: []kafka.Header{{Key: exactly.Header, Value: []byte("x")}}},
	} {
		if _, err := b.ob.Enqueue(context.Background(), b.pool, m); !errors.Is(err, outbox.ErrInvalidMessage) {
			t.Errorf("Enqueue(%+v): got %v, want ErrInvalidMessage", m, err)
		}
	}
	if countRows(t, b, "outbox") != 0 {
		t.Fatal("an invalid message was enqueued")
	}
	ids, err := b.ob.Enqueue(context.Background(), b.pool, outbox.Message{Topic: b.topic, ID: "0190C5A2-7B1E-7C3D-9E4F-A1B2C3D4E5F6"})
	if err != nil || len(ids) != 1 {
		t.Fatalf("Enqueue with an explicit ID: %v %v", ids, err)
	}
	for _, cfg := range []outbox.Config{{Shards: -1}, {Table: strings.Repeat("x", 60)}, {NotifyWindow: -2}} {
		if _, err := outbox.New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

// TestShards: the shard report shows the backlog and which shards a relay
// owns.
func TestShards(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	enqueue(t, b, outbox.Message{Topic: b.topic, Key: []byte("a"), Value: []byte("1")}, outbox.Message{Topic: b.topic, Key: []byte("a"), Value: []byte("2")})
	st, err := outbox.Shards(context.Background(), b.pool, b.ob.Config())
	if err != nil {
		t.Fatal(err)
	}
	var backlog int64
	for _, s := range st {
		backlog += s.Backlog
		if s.Owned {
			t.Errorf("shard %d owned with no relay running", s.Shard)
		}
	}
	if len(st) != b.ob.Config().Shards || backlog != 2 {
		t.Fatalf("shards %+v: want %d shards, backlog 2", st, b.ob.Config().Shards)
	}
	startRelay(t, b.pool, b.relay)
	waitEmpty(t, b)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err = outbox.Shards(context.Background(), b.pool, b.ob.Config())
		if err != nil {
			t.Fatal(err)
		}
		owned := 0
		for _, s := range st {
			if s.Owned {
				owned++
			}
		}
		if owned == len(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay owns %d of %d shards", owned, len(st))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHeldBackRowsDoNotWaitForPoll: a row committed while an older
// transaction runs cannot be published until that one ends, which sends no
// notification. The relay must notice within its fast polling, not after
// PollInterval (an hour here).
func TestHeldBackRowsDoNotWaitForPoll(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	cfg := b.relay
	cfg.PollInterval = time.Hour
	cfg.Linger = time.Millisecond
	startRelay(t, b.pool, cfg)
	// An unrelated writing transaction holds the xmin horizon back.
	blocker, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback(ctx) //nolint:errcheck
	if _, err := blocker.Exec(ctx, "SELECT pg_current_xact_id()"); err != nil {
		t.Fatal(err)
	}
	enqueue(t, b, outbox.Message{Topic: b.topic, Value: []byte("held")})
	if err := blocker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	got := kafkatest.ReadAll(t, b.topic, 1, 1, 30*time.Second)
	if string(got[0].Value) != "held" {
		t.Fatalf("got %q", got[0].Value)
	}
}

// TestEnqueueRefusesOversizeMessages: a message whose key, value and
// headers exceed Config.MaxMessageBytes (1 MiB by default, Kafka's default
// max.message.bytes) is refused with ErrMessageTooLarge, and nothing of its
// call is enqueued; one at the limit is accepted.
func TestEnqueueRefusesOversizeMessages(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	if got := b.ob.Config().MaxMessageBytes; got != 1<<20 || outbox.MaxMessageBytesDefault != 1<<20 {
		t.Fatalf("MaxMessageBytes defaults to %d, want 1 MiB", got)
	}
	_, err := b.ob.Enqueue(ctx, b.pool,
		outbox.Message{Topic: b.topic, Value: []byte("fine")},
		outbox.Message{Topic: b.topic, Key: []byte("k"), Value: make([]byte, 1<<20)})
	if !errors.Is(err, outbox.ErrMessageTooLarge) || !errors.Is(err, outbox.ErrInvalidMessage) || !strings.Contains(err.Error(), "message 1") {
		t.Fatalf("Enqueue of 1 MiB + 1 byte: %v, want ErrMessageTooLarge naming message 1", err)
	}
	if n := countRows(t, b, "outbox"); n != 0 {
		t.Fatalf("%d rows enqueued by a refused call", n)
	}
	if _, err := b.ob.Enqueue(ctx, b.pool, outbox.Message{Topic: b.topic, Value: make([]byte, 1<<20)}); err != nil {
		t.Fatalf("Enqueue of exactly 1 MiB: %v", err)
	}

	cfg := b.ob.Config()
	cfg.MaxMessageBytes = 100
	small, err := outbox.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Header keys and values count: 10 + 80 + 1 + 10 bytes.
	m := outbox.Message{Topic: b.topic, Key: make([]byte, 10), Value: make([]byte, 80), Headers: []kafka.Header{{Key: "h", Value: make([]byte, 10)}}}
	err = pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		_, err := small.EnqueueTx(ctx, tx, m)
		return err
	})
	if !errors.Is(err, outbox.ErrMessageTooLarge) {
		t.Fatalf("EnqueueTx of 101 bytes with MaxMessageBytes 100: %v, want ErrMessageTooLarge", err)
	}
	m.Value = m.Value[:79]
	if _, err := small.Enqueue(ctx, b.pool, m); err != nil {
		t.Fatalf("Enqueue of 100 bytes with MaxMessageBytes 100: %v", err)
	}
	if _, err := outbox.New(outbox.Config{MaxMessageBytes: -1}); err == nil {
		t.Error("New with a negative MaxMessageBytes succeeded")
	}
}

// TestEnqueueRefusesBadNames: topics Kafka would refuse, and header keys
// that Postgres cannot store (NUL) or JSON would rewrite (invalid UTF-8),
// are refused at enqueue with an error naming them, not rewritten or failed
// by the database; a valid non-ASCII header key arrives unchanged.
func TestEnqueueRefusesBadNames(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	for _, tc := range []struct {
		m    outbox.Message
		want string
	}{
		{outbox.Message{Topic: b.topic, Headers: []kafka.Header{{Key: "bad\xffkey", Value: []byte("v")}}}, `header 0 ("bad\xffkey")`},
		{outbox.Message{Topic: b.topic, Headers: []kafka.Header{{Key: "ok"}, {Key: "nul\x00key", Value: []byte("v")}}}, `header 1 ("nul\x00key")`},
		{outbox.Message{Topic: ""}, "no topic"},
		{outbox.Message{Topic: "nul\x00topic"}, `topic "nul\x00topic"`},
		{outbox.Message{Topic: "bad\xfftopic"}, `topic "bad\xfftopic"`},
		{outbox.Message{Topic: "has space"}, `topic "has space"`},
		{outbox.Message{Topic: "ünïcode"}, `topic "ünïcode"`},
		{outbox.Message{Topic: ".."}, `topic ".."`},
		{outbox.Message{Topic: strings.Repeat("t", 250)}, "250"},
		{outbox.Message{Topic: b.topic, Headers: []kafka.Header{{Key: "Idempotency-Key", Value: []byte("a")}, {Key: "idempotency-key", Value: []byte("b")}}}, "2 Idempotency-Key headers"},
		{outbox.Message{Topic: b.topic, ID: "0190a0e4-0000-7000-8000-000000000001", Headers: []kafka.Header{{Key: "IDEMPOTENCY-KEY", Value: []byte("a")}}}, "sets both ID and the IDEMPOTENCY-KEY header"},
	} {
		_, err := b.ob.Enqueue(ctx, b.pool, tc.m)
		if !errors.Is(err, outbox.ErrInvalidMessage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Enqueue(topic %q, headers %q): %v, want ErrInvalidMessage naming %s", tc.m.Topic, tc.m.Headers, err, tc.want)
		}
	}
	if n := countRows(t, b, "outbox"); n != 0 {
		t.Fatalf("%d invalid messages enqueued", n)
	}
	if _, err := b.ob.Enqueue(ctx, b.pool, outbox.Message{Topic: strings.Repeat("t", 249)},
		outbox.Message{Topic: "a-valid_topic.name", Key: []byte("nul\x00key\xff"), Headers: []kafka.Header{{Key: "ключ-ü", Value: []byte("\x00\xff")}}}); err != nil {
		t.Fatalf("valid messages: %v", err)
	}
	var key []byte
	var headers string
	if err := b.pool.QueryRow(ctx, "SELECT key, headers::text FROM "+pgx.Identifier{b.schema, "outbox"}.Sanitize()+" WHERE topic = 'a-valid_topic.name'").Scan(&key, &headers); err != nil {
		t.Fatal(err)
	}
	if string(key) != "nul\x00key\xff" || !strings.Contains(headers, `"ключ-ü"`) {
		t.Fatalf("stored key %q, headers %s: want them unchanged", key, headers)
	}
}

// TestDeadLetterRetention: a running relay deletes dead letters resolved
// longer ago than DeadLetterRetention, by the database's clock, and keeps
// unresolved and recently resolved ones.
func TestDeadLetterRetention(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	cfg := b.relay
	cfg.DeadLetterRetention = 24 * time.Hour
	cfg.PruneInterval = 50 * time.Millisecond
	cfg.PruneBatchSize = 1
	cfg.Logger = testLogger(t)
	dl := pgx.Identifier{b.schema, "outbox_dead_letters"}.Sanitize()
	if _, err := b.pool.Exec(context.Background(), `INSERT INTO `+dl+` (id, shard, message_id, topic, headers, created_at, attempts, reason, error, resolved_at, resolution)
		VALUES (1, 0, gen_random_uuid(), 't', '[]', now() - interval '3 days', 10, 'too_large', 'e', now() - interval '2 days', 'discarded'),
		       (2, 0, gen_random_uuid(), 't', '[]', now() - interval '3 days', 10, 'too_large', 'e', now() - interval '25 hours', 'replayed'),
		       (3, 0, gen_random_uuid(), 't', '[]', now() - interval '3 days', 10, 'too_large', 'e', NULL, NULL),
		       (4, 0, gen_random_uuid(), 't', '[]', now() - interval '3 days', 10, 'too_large', 'e', now() - interval '1 hour', 'discarded')`); err != nil {
		t.Fatal(err)
	}
	startRelay(t, b.pool, cfg)
	deadline := time.Now().Add(30 * time.Second)
	for {
		rows, err := b.pool.Query(context.Background(), "SELECT id FROM "+dl+" ORDER BY id")
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) == 2 && ids[0] == 3 && ids[1] == 4 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters left: %v, want [3 4]", ids)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
