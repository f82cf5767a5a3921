package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/pgtest"
)

// TestDuplicateSends produces every message two or three times with the same
// token (a producer retry, a double click): each has one effect. Half the
// copies follow their original at once (claimed in the same batch), the
// others are sent again after every original (claimed in later batches,
// against tokens already committed).
func TestDuplicateSends(t *testing.T) {
	t.Parallel()
	b := setup(t, 4)
	const n = 2000
	orig := msgs("dup", n, 50)
	var all []kafka.Message
	for i, m := range orig {
		all = append(all, m)
		if i%2 == 0 {
			all = append(all, m) // a retry right behind the original
		}
	}
	all = append(all, orig...) // everything sent again, much later
	kafkatest.Produce(t, b.writer, all...)
	c, err := consumer.New(b.cfg, insertEffect(b.effects))
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	waitCount(t, b.pool, 60*time.Second, n, "SELECT count(DISTINCT token) FROM "+b.effects)
	// Let the duplicates after the last fresh message be consumed too.
	waitCommitted(t, b, int64(len(all)))
	checkEffects(t, b, n)
}

// TestAtLeastOnce: with the inbox switched off every delivery is handled,
// duplicates and messages without a token included, and nothing is claimed.
func TestAtLeastOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	const n = 300
	orig := msgs("alo", n, 10)
	for i := range orig {
		if i%3 == 0 {
			orig[i].Headers = nil // no token: the inbox would dead-letter it
		}
	}
	kafkatest.Produce(t, b.writer, append(orig, orig...)...)
	cfg := b.cfg
	cfg.AtLeastOnce = true
	c, err := consumer.New(cfg, insertEffect(b.effects))
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	waitCommitted(t, b, 2*n)
	var effects, claimed int
	if err := b.pool.QueryRow(context.Background(), "SELECT (SELECT count(*) FROM "+b.effects+"), (SELECT count(*) FROM "+
		pgx.Identifier{b.schema, "inbox"}.Sanitize()+")").Scan(&effects, &claimed); err != nil {
		t.Fatal(err)
	}
	if effects != 2*n || claimed != 0 {
		t.Fatalf("%d effects and %d claimed tokens, want %d effects (every delivery) and none claimed", effects, claimed, 2*n)
	}
	if dl := deadLetters(t, b); len(dl) != 0 {
		t.Fatalf("dead letters %v", dl)
	}
}

// waitCommitted waits until the group committed offsets summing to total
// across the topic's partitions: every message settled.
func waitCommitted(t *testing.T, b bundle, total int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := committed(t, b.cfg.GroupID, b.topic)
		if got >= total {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s committed %d messages, want %d", b.cfg.GroupID, got, total)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// committed sums the group's committed offsets over the topic (-1 when the
// broker does not answer).
func committed(t *testing.T, group, topic string) int64 {
	t.Helper()
	offsets, err := kafkatest.Committed(context.Background(), group, topic, 8)
	if err != nil {
		return -1
	}
	var sum int64
	for _, o := range offsets {
		sum += o
	}
	return sum
}

func deadLetters(t *testing.T, b bundle) map[string]string {
	t.Helper()
	rows, err := b.pool.Query(context.Background(), "SELECT coalesce(token, '<none>') || '@' || kafka_offset, reason || ':' || attempts || ':' || error FROM "+pgx.Identifier{b.schema, "dead_letters"}.Sanitize())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	var k, v string
	if _, err := pgx.ForEachRow(rows, []any{&k, &v}, func() error { out[k] = v; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPoisonMessage: a message whose handler always fails is retried
// MaxAttempts times, dead-lettered, and the partition moves on in order. A
// Permanent error and a panic are handled the same way.
func TestPoisonMessage(t *testing.T) {
	t.Parallel()
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			t.Parallel()
			b := setup(t, 1)
			b.cfg.MaxAttempts = 3
			all := msgs("p", 300, 10)
			kafkatest.Produce(t, b.writer, all...)
			var poisonCalls atomic.Int32
			apply := insertEffect(b.effects)
			one := func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
				switch m.Token.String() {
				case "p-17":
					poisonCalls.Add(1)
					// Write first, then fail: the write must not survive.
					if err := apply(ctx, tx, m); err != nil {
						return err
					}
					return errors.New("always fails")
				case "p-150":
					return consumer.Permanent(errors.New("cannot ever work"))
				case "p-222":
					panic("handler bug")
				}
				return apply(ctx, tx, m)
			}
			c := newConsumer(t, b.cfg, batch, one)
			start(t, c)
			waitCommitted(t, b, int64(len(all)))
			checkEffects(t, b, len(all)-3)
			dl := deadLetters(t, b)
			for key, want := range map[string]string{
				"p-17@17":   "handler_error:3:always fails",
				"p-150@150": "permanent:1:cannot ever work",
				"p-222@222": "handler_error:3:handler panicked: handler bug",
			} {
				if !strings.HasPrefix(dl[key], want) {
					t.Errorf("dead letter %s = %q, want prefix %q", key, dl[key], want)
				}
			}
			if len(dl) != 3 {
				t.Errorf("dead letters: %v, want 3", dl)
			}
			// A failing batch call cannot be blamed on one message, so it does
			// not count as an attempt: the batch handler sees the poison
			// message once more than MaxAttempts.
			want := int32(3)
			if batch {
				want = 4
			}
			if got := poisonCalls.Load(); got != want {
				t.Errorf("poison handler ran %d times, want %d", got, want)
			}
		})
	}
}

// TestBadInput: messages without a usable token, oversized, undecodable, or
// reusing a token for other content are dead-lettered with a clear reason;
// the good messages around them are applied once.
func TestBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.cfg.MaxMessageBytes = 1000
	type order struct {
		Amount int `json:"amount"`
	}
	h := consumer.JSON(func(ctx context.Context, tx pgx.Tx, m consumer.Message, o order) error {
		return insertEffect(b.effects)(ctx, tx, m)
	})
	hdr := func(tok string) []kafka.Header { return []kafka.Header{{Key: "Idempotency-Key", Value: []byte(tok)}} }
	kafkatest.Produce(t, b.writer,
		kafka.Message{Key: []byte("k"), Value: []byte(`{"amount":1}`), Headers: hdr("good-1")},                                        // 0
		kafka.Message{Key: []byte("k"), Value: []byte(`{"amount":2}`)},                                                                // 1 no token
		kafka.Message{Key: []byte("k"), Value: []byte(`{"amount":3}`), Headers: hdr(strings.Repeat("x", 2000))},                       // 2 token too long
		kafka.Message{Key: []byte("k"), Value: []byte(`{"amount":4,"pad":"` + strings.Repeat("y", 2000) + `"}`), Headers: hdr("big")}, // 3 oversized
		kafka.Message{Key: []byte("k"), Value: []byte(`not json`), Headers: hdr("garbled")},                                           // 4 undecodable
		kafka.Message{Key: []byte("k"), Value: []byte(`{"amount":1}`), Headers: hdr("good-1")},                                        // 5 duplicate
		kafka.Message{Key: []byte("k"), Value: []byte(`{"amount":999}`), Headers: hdr("good-1")},                                      // 6 conflict
		kafka.Message{Key: []byte("k"), Value: []byte(`{"amount":7}`), Headers: hdr("good-2")},                                        // 7
	)
	c, err := consumer.New(b.cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	waitCommitted(t, b, 8)
	var n int
	if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+b.effects).Scan(&n); err != nil || n != 2 {
		t.Fatalf("effects: %d (err %v), want 2 (good-1 and good-2)", n, err)
	}
	dl := deadLetters(t, b)
	for key, want := range map[string]string{
		"<none>@1":  "no_token:0:inbox: no idempotency token: header \"Idempotency-Key\" absent",
		"<none>@2":  "invalid_token:0:",
		"<none>@3":  "oversized:0:",
		"garbled@4": "undecodable:1:consumer: undecodable payload",
		"good-1@6":  "token_conflict:0:token good-1 was first used at " + b.topic + "/0/0",
	} {
		if !strings.HasPrefix(dl[key], want) {
			t.Errorf("dead letter %s = %q, want prefix %q", key, dl[key], want)
		}
	}
	if len(dl) != 5 {
		t.Errorf("dead letters: %v, want 5", dl)
	}
	// The dead letter keeps the whole message, for inspection and replay.
	var value []byte
	var keys []string
	err = b.pool.QueryRow(context.Background(), "SELECT kafka_value, header_keys FROM "+pgx.Identifier{b.schema, "dead_letters"}.Sanitize()+" WHERE kafka_offset = 3").Scan(&value, &keys)
	if err != nil || len(value) < 2000 || len(keys) != 1 {
		t.Errorf("oversized dead letter lost content: %d bytes, headers %v, err %v", len(value), keys, err)
	}
}

// TestBatchHandlerOnce: the batch handler sees only fresh messages, once.
func TestBatchHandlerOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, 4)
	const n = 3000
	all := msgs("bh", n, 40)
	kafkatest.Produce(t, b.writer, all...)
	kafkatest.Produce(t, b.writer, all[:500]...) // redelivered by the producer
	apply := insertEffect(b.effects)
	var maxBatch atomic.Int32
	c, err := consumer.NewBatch(b.cfg, consumer.BatchHandlerFunc(func(ctx context.Context, tx pgx.Tx, ms []consumer.Message) error {
		if int32(len(ms)) > maxBatch.Load() {
			maxBatch.Store(int32(len(ms)))
		}
		for _, m := range ms {
			if err := apply(ctx, tx, m); err != nil {
				return err
			}
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	waitCommitted(t, b, n+500)
	checkEffects(t, b, n)
	if maxBatch.Load() < 2 {
		t.Errorf("largest batch handed to the batch handler: %d; batching did not happen", maxBatch.Load())
	}
}

// TestTwoConsumersRebalance: partitions move between two members of a
// group while messages flow; each token has one effect.
func TestTwoConsumersRebalance(t *testing.T) {
	t.Parallel()
	b := setup(t, 4)
	const n = 6000
	all := msgs("rb", n, 60)
	slow := func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		if m.Offset%100 == 0 {
			time.Sleep(5 * time.Millisecond) // keep work in flight during rebalances
		}
		return insertEffect(b.effects)(ctx, tx, m)
	}
	c1, err := consumer.New(b.cfg, consumer.HandlerFunc(slow))
	if err != nil {
		t.Fatal(err)
	}
	c2, err := consumer.New(b.cfg, consumer.HandlerFunc(slow))
	if err != nil {
		t.Fatal(err)
	}
	stop1 := start(t, c1)
	kafkatest.Produce(t, b.writer, all[:2000]...)
	waitCount(t, b.pool, 60*time.Second, 500, "SELECT count(*) FROM "+b.effects)
	start(t, c2) // partitions split between c1 and c2
	kafkatest.Produce(t, b.writer, all[2000:4000]...)
	waitCount(t, b.pool, 60*time.Second, 2500, "SELECT count(*) FROM "+b.effects)
	stop1() // c1 leaves; c2 takes everything
	kafkatest.Produce(t, b.writer, all[4000:]...)
	kafkatest.Produce(t, b.writer, all[3000:3500]...) // and some duplicates
	waitCommitted(t, b, n+500)
	checkEffects(t, b, n)
}

// TestShutdownCommitsOffsets: after Run returns, the group's committed
// offsets cover everything Postgres committed, so a restart redoes nothing.
func TestShutdownCommitsOffsets(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	all := msgs("sd", 1000, 10)
	kafkatest.Produce(t, b.writer, all...)
	c, err := consumer.New(b.cfg, insertEffect(b.effects))
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, c)
	waitCount(t, b.pool, 60*time.Second, 1000, "SELECT count(*) FROM "+b.effects)
	stop()
	if got := committed(t, b.cfg.GroupID, b.topic); got != 1000 {
		t.Fatalf("after shutdown the group committed %d, want 1000", got)
	}
	checkEffects(t, b, 1000)
	if err := c.Run(canceledCtx()); err != nil {
		t.Fatalf("Run after a clean stop: %v", err)
	}
}

func canceledCtx() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// TestConfigErrors: bad configuration fails fast, naming what is wrong.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	good := testConfig(pool, "s", "t", "g")
	h := consumer.HandlerFunc(func(context.Context, pgx.Tx, consumer.Message) error { return nil })
	for _, tc := range []struct {
		mutate func(*consumer.Config)
		want   string
	}{
		{func(c *consumer.Config) { c.Brokers = nil }, "Config.Brokers"},
		{func(c *consumer.Config) { c.Brokers = []string{"nohost"} }, "not host:port"},
		{func(c *consumer.Config) { c.GroupID = "" }, "Config.GroupID"},
		{func(c *consumer.Config) { c.Topics = nil }, "Config.Topics"},
		{func(c *consumer.Config) { c.Pool = nil }, "Config.Pool"},
		{func(c *consumer.Config) { c.BatchSize = 100000 }, "Config.BatchSize"},
		{func(c *consumer.Config) { c.MaxAttempts = -1 }, "Config.MaxAttempts"},
		{func(c *consumer.Config) { c.RetryMax = time.Millisecond; c.RetryInitial = time.Second }, "Config.RetryMax"},
		{func(c *consumer.Config) { c.StartOffset = 42 }, "Config.StartOffset"},
		{func(c *consumer.Config) { c.Inbox.Table = strings.Repeat("t", 64) }, "Config.Table"},
		{func(c *consumer.Config) { c.InboxRetention = time.Minute }, "Config.InboxRetention"},
		{func(c *consumer.Config) { c.DeadLetterRetention = -time.Hour }, "Config.DeadLetterRetention"},
		{func(c *consumer.Config) { c.AtLeastOnce = true; c.InboxRetention = time.Hour }, "AtLeastOnce claims no tokens"},
		{func(c *consumer.Config) { c.Inbox.Layout = "sharded" }, "Config.Layout"},
	} {
		cfg := good
		tc.mutate(&cfg)
		if _, err := consumer.New(cfg, h); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New: got %v, want an error mentioning %q", err, tc.want)
		}
	}
	if _, err := consumer.New(good, nil); err == nil {
		t.Error("New with nil handler succeeded")
	}
}

// TestRunFailsFast: Run returns a clear error at once when Postgres or Kafka
// is unreachable or the tables were never migrated.
func TestRunFailsFast(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	h := consumer.HandlerFunc(func(context.Context, pgx.Tx, consumer.Message) error { return nil })
	run := func(cfg consumer.Config) error {
		cfg.StartupTimeout = 3 * time.Second
		c, err := consumer.New(cfg, h)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return c.Run(ctx)
	}
	noKafka := b.cfg
	noKafka.Brokers = []string{"127.0.0.1:1"}
	if err := run(noKafka); err == nil || !strings.Contains(err.Error(), "no Kafka broker answers") {
		t.Errorf("unreachable Kafka: got %v", err)
	}
	notMigrated := b.cfg
	notMigrated.Inbox.Schema = "never_migrated_" + pgtest.RandomSuffix()
	if err := run(notMigrated); err == nil || !strings.Contains(err.Error(), "must exist") {
		t.Errorf("not migrated: got %v", err)
	}
	otherLayout := b.cfg
	otherLayout.Inbox.Layout = inbox.LayoutPartitioned
	if err := run(otherLayout); !errors.Is(err, inbox.ErrLayout) {
		t.Errorf("a partitioned Config.Inbox.Layout on a single-table inbox: got %v, want ErrLayout", err)
	}
	noPostgres := b.cfg
	pool, err := pgxpool.New(context.Background(), "postgres://nobody:x@127.0.0.1:1/none?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	noPostgres.Pool = pool
	if err := run(noPostgres); err == nil || !strings.Contains(err.Error(), "Postgres unreachable") {
		t.Errorf("unreachable Postgres: got %v", err)
	}
}

// TestShutdownFinishesSiblings: at shutdown, a partition whose batch is
// still running gets to commit it even after the other partitions stopped
// (kafka-go ends a generation when any of its goroutines returns).
func TestShutdownFinishesSiblings(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	// Find one key per partition.
	keys := map[int]string{}
	for i := 0; len(keys) < 2; i++ {
		k := fmt.Sprintf("key-%d", i)
		keys[(&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: []byte(k)}, 0, 1)] = k
	}
	hdr := func(tok string) []kafka.Header { return []kafka.Header{{Key: "Idempotency-Key", Value: []byte(tok)}} }
	kafkatest.Produce(t, b.writer,
		kafka.Message{Key: []byte(keys[0]), Value: []byte("0"), Headers: hdr("fast")},
		kafka.Message{Key: []byte(keys[1]), Value: []byte("0"), Headers: hdr("slow")})
	started, release := make(chan struct{}), make(chan struct{})
	apply := insertEffect(b.effects)
	c, err := consumer.New(b.cfg, consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		if m.Token.String() == "slow" && m.Attempt == 1 {
			close(started)
			<-release
		}
		return apply(ctx, tx, m)
	}))
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, c)
	waitCount(t, b.pool, 60*time.Second, 1, "SELECT count(*) FROM "+b.effects+" WHERE token = 'fast'")
	<-started
	stopped := make(chan struct{})
	go func() {
		stop()
		close(stopped)
	}()
	// Give the fast partition time to stop; before the fix its exit ended
	// the generation and cancelled the slow partition's transaction.
	time.Sleep(500 * time.Millisecond)
	close(release)
	<-stopped
	checkEffects(t, b, 2)
	if got := committed(t, b.cfg.GroupID, b.topic); got != 2 {
		t.Fatalf("committed %d after shutdown, want 2", got)
	}
}

// TestConflictWithRolledBackClaim: a token used twice in one batch with
// different payloads, whose first message is dead-lettered, is applied with
// the second: the first's claim did not commit, as it would not have in a
// batch of its own. (The conflict found in the rolled-back optimistic pass
// was kept, and the second message dead-lettered as token_conflict for a
// token nothing had applied.)
func TestConflictWithRolledBackClaim(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	tok := func(s string) []kafka.Header { return []kafka.Header{{Key: "Idempotency-Key", Value: []byte(s)}} }
	kafkatest.Produce(t, b.writer,
		kafka.Message{Key: []byte("k"), Value: []byte("0"), Headers: tok("before")},
		kafka.Message{Key: []byte("k"), Value: []byte("fail"), Headers: tok("twice")},
		kafka.Message{Key: []byte("k"), Value: []byte("1"), Headers: tok("twice")},
		kafka.Message{Key: []byte("k"), Value: []byte("2"), Headers: tok("after")},
	)
	apply := insertEffect(b.effects)
	c, err := consumer.New(b.cfg, consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		if string(m.Value) == "fail" {
			return consumer.Permanent(errors.New("cannot ever work"))
		}
		return apply(ctx, tx, m)
	}))
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	waitCommitted(t, b, 4)
	checkEffects(t, b, 3)
	dl := deadLetters(t, b)
	if len(dl) != 1 || !strings.HasPrefix(dl["twice@1"], consumer.ReasonPermanent+":") {
		t.Fatalf("dead letters %v, want only twice@1 (permanent)", dl)
	}
}
