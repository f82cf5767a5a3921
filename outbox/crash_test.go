package outbox_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/pgtest"
	"github.com/exactlyhq/exactly/internal/proctest"
	"github.com/exactlyhq/exactly/internal/runtest"
	"github.com/exactlyhq/exactly/internal/testhook"
	"github.com/exactlyhq/exactly/outbox"
)

// Child roles. Each reads its settings from the environment, prints
// progress lines on stdout and runs until SIGTERM or SIGKILL.

func childContext() (context.Context, *pgxpool.Pool, func()) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	pool, err := pgxpool.New(ctx, pgtest.DSN())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	return ctx, pool, func() { pool.Close(); stop() }
}

func childLogger() *slog.Logger { return slog.New(slog.NewTextHandler(os.Stderr, nil)) }

// relayMain runs a relay. CHILD_HOOK=pause stops it dead after its first
// publish, before the rows are removed.
func relayMain() int {
	ctx, pool, done := childContext()
	defer done()
	var mu sync.Mutex
	testhook.Set("outbox.after-publish", func() {
		mu.Lock()
		defer mu.Unlock()
		fmt.Println("PUBLISHED")
		if os.Getenv("CHILD_HOOK") == "pause" {
			select {}
		}
	})
	cfg := relayConfig(outbox.Config{Schema: os.Getenv("CHILD_SCHEMA")})
	cfg.Logger = childLogger()
	r, err := outbox.NewRelay(pool, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := r.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func consumerConfig(pool *pgxpool.Pool, schema, topic, group string) consumer.Config {
	return consumer.Config{
		Brokers: kafkatest.Brokers(), GroupID: group, Topics: []string{topic}, Pool: pool,
		Inbox:     inbox.Config{Schema: schema},
		BatchSize: 100, BatchWait: 5 * time.Millisecond, RetryInitial: 5 * time.Millisecond, RetryMax: 100 * time.Millisecond,
		SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second, FetchMaxWait: 100 * time.Millisecond,
		Logger: childLogger(),
	}
}

func printCommits() {
	var mu sync.Mutex
	testhook.Set("consumer.after-db-commit", func() {
		mu.Lock()
		defer mu.Unlock()
		fmt.Println("COMMITTED")
	})
}

// hop1Main consumes CHILD_TOPIC_A: it records an order and enqueues an
// event for CHILD_TOPIC_B in the same transaction.
func hop1Main() int {
	ctx, pool, done := childContext()
	defer done()
	printCommits()
	schema := os.Getenv("CHILD_SCHEMA")
	ob, err := outbox.New(outbox.Config{Schema: schema})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	orders := pgx.Identifier{schema, "orders"}.Sanitize()
	c, err := consumer.New(consumerConfig(pool, schema, os.Getenv("CHILD_TOPIC_A"), "hop1-"+schema),
		consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
			if _, err := tx.Exec(ctx, "INSERT INTO "+orders+" (token, key, value) VALUES ($1, $2, $3)", m.Token.String(), string(m.Key), string(m.Value)); err != nil {
				return err
			}
			_, err := ob.EnqueueTx(ctx, tx, outbox.Message{Topic: os.Getenv("CHILD_TOPIC_B"), Key: m.Key, Value: m.Value})
			return err
		}))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := c.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// hop2Main consumes CHILD_TOPIC_B and records one effect per event.
func hop2Main() int {
	ctx, pool, done := childContext()
	defer done()
	printCommits()
	schema := os.Getenv("CHILD_SCHEMA")
	effects := pgx.Identifier{schema, "effects"}.Sanitize()
	cfg := consumerConfig(pool, schema, os.Getenv("CHILD_TOPIC_B"), "hop2-"+schema)
	cfg.Inbox.Table = "inbox_hop2"
	cfg.DeadLetterTable = "dead_letters_hop2"
	c, err := consumer.New(cfg, consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		_, err := tx.Exec(ctx, "INSERT INTO "+effects+" (token, key, value) VALUES ($1, $2, $3)", m.Token.String(), string(m.Key), string(m.Value))
		return err
	}))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := c.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// downstream consumes topic in this process, writing one effect per message
// into <schema>.effects, deduplicated by the outbox message id.
func downstream(t *testing.T, b bundle) string {
	t.Helper()
	ctx := context.Background()
	effects := pgx.Identifier{b.schema, "effects"}.Sanitize()
	if _, err := b.pool.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+effects+" (id bigserial PRIMARY KEY, token text NOT NULL, key text NOT NULL, value text NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	cfg := consumerConfig(b.pool, b.schema, b.topic, "down-"+b.schema)
	cfg.Logger = testLogger(t)
	if err := consumer.Migrate(ctx, b.pool, cfg); err != nil {
		t.Fatal(err)
	}
	c, err := consumer.New(cfg, consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		_, err := tx.Exec(ctx, "INSERT INTO "+effects+" (token, key, value) VALUES ($1, $2, $3)", m.Token.String(), string(m.Key), string(m.Value))
		return err
	}))
	if err != nil {
		t.Fatal(err)
	}
	runtest.Background(t, "downstream consumer", 60*time.Second, c.Run)
	return effects
}

func waitCount(t *testing.T, pool *pgxpool.Pool, timeout time.Duration, want int, query string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var got int
	for {
		err := pool.QueryRow(context.Background(), query).Scan(&got)
		if err == nil && got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %d, have %d (err %v): %s", timeout, want, got, err, query)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkOnce asserts table holds exactly want rows with distinct tokens and,
// per key, values in increasing order.
func checkOnce(t *testing.T, pool *pgxpool.Pool, table string, want int) {
	t.Helper()
	var total, distinct, disorder int
	err := pool.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT token),
		(SELECT count(*) FROM (SELECT value::int - lag(value::int) OVER (PARTITION BY key ORDER BY id) AS step FROM `+table+`) s WHERE step <= 0)
		FROM `+table).Scan(&total, &distinct, &disorder)
	if err != nil {
		t.Fatal(err)
	}
	if total != want || distinct != want || disorder != 0 {
		t.Fatalf("%s: %d rows, %d distinct tokens, %d out of per-key order; want %d once each, in order", table, total, distinct, disorder, want)
	}
}

// TestRelayCrashAfterPublish kills the relay after Kafka acknowledged a
// batch and before the rows were removed. The next relay publishes them
// again under the same message ids; the downstream consumer applies each
// once.
func TestRelayCrashAfterPublish(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	const n = 200
	var msgs []outbox.Message
	for i := range n {
		msgs = append(msgs, outbox.Message{Topic: b.topic, Key: []byte("k" + strconv.Itoa(i%7)), Value: []byte(strconv.Itoa(i))})
	}
	enqueue(t, b, msgs...)

	first := proctest.Start(t, "relay", "CHILD_SCHEMA="+b.schema, "CHILD_HOOK=pause")
	first.WaitLine(t, "PUBLISHED", 60*time.Second)
	first.Kill()
	if left := countRows(t, b, "outbox"); left != n {
		t.Fatalf("%d rows left after the kill, want all %d (killed before removal)", left, n)
	}
	second := proctest.Start(t, "relay", "CHILD_SCHEMA="+b.schema)
	waitEmpty(t, b)
	second.Stop(10 * time.Second)

	// The topic holds the republished messages twice, with equal ids.
	got := kafkatest.ReadAll(t, b.topic, 2, n+1, 30*time.Second)
	ids := map[string]int{}
	for _, m := range got {
		ids[kafkatest.Header(m, exactly.Header)]++
	}
	if len(ids) > n {
		t.Fatalf("%d distinct message ids for %d messages: a republish changed ids", len(ids), n)
	}
	effects := downstream(t, b)
	waitCount(t, b.pool, 60*time.Second, n, "SELECT count(DISTINCT token) FROM "+effects)
	checkOnce(t, b.pool, effects, n)
}

// TestThreeRelaysOneKilled runs three relays at once and kills one while
// rows flow: nothing is lost and per-key order holds downstream.
func TestThreeRelaysOneKilled(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	relays := []*proctest.Child{
		proctest.Start(t, "relay", "CHILD_SCHEMA="+b.schema),
		proctest.Start(t, "relay", "CHILD_SCHEMA="+b.schema),
		proctest.Start(t, "relay", "CHILD_SCHEMA="+b.schema),
	}
	const n, keys = 3000, 30
	seq := 0
	batch := func(count int) {
		var msgs []outbox.Message
		for range count {
			msgs = append(msgs, outbox.Message{Topic: b.topic, Key: []byte("k" + strconv.Itoa(seq%keys)), Value: []byte(strconv.Itoa(seq / keys))})
			seq++
		}
		enqueue(t, b, msgs...)
	}
	for range 10 {
		batch(150)
	}
	// Kill a relay that is publishing (one may own no shard at all).
	relays[proctest.WaitAny(t, relays, "PUBLISHED", 60*time.Second)].Kill()
	for range 10 {
		batch(150)
	}
	waitEmpty(t, b)
	effects := downstream(t, b)
	waitCount(t, b.pool, 60*time.Second, n, "SELECT count(DISTINCT token) FROM "+effects)
	checkOnce(t, b.pool, effects, n)
}

// TestTwoHopsRandomKills: consumer → handler writes and enqueues → relay →
// second consumer, with every process killed at random moments. Each input
// message has exactly one order and one effect at the end.
func TestTwoHopsRandomKills(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	topicA, topicB := kafkatest.Topic(t, 2), b.topic
	ctx := context.Background()
	for _, table := range []string{"orders", "effects"} {
		if _, err := b.pool.Exec(ctx, "CREATE TABLE "+pgx.Identifier{b.schema, table}.Sanitize()+" (id bigserial PRIMARY KEY, token text NOT NULL, key text NOT NULL, value text NOT NULL)"); err != nil {
			t.Fatal(err)
		}
	}
	for _, cfg := range []consumer.Config{
		consumerConfig(b.pool, b.schema, topicA, "x"),
		{Brokers: kafkatest.Brokers(), GroupID: "x", Topics: []string{"x"}, Pool: b.pool, Inbox: inbox.Config{Schema: b.schema, Table: "inbox_hop2"}, DeadLetterTable: "dead_letters_hop2"},
	} {
		if err := consumer.Migrate(ctx, b.pool, cfg); err != nil {
			t.Fatal(err)
		}
	}
	const n = 3000
	w := kafkatest.Writer(t, topicA)
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; i < n; i += 300 {
			var msgs []kafka.Message
			for j := i; j < i+300; j++ {
				m := kafka.Message{Key: []byte("k" + strconv.Itoa(j%20)), Value: []byte(strconv.Itoa(j / 20)),
					Headers: []kafka.Header{{Key: "Idempotency-Key", Value: []byte("in-" + strconv.Itoa(j))}}}
				msgs = append(msgs, m)
				if j%10 == 0 {
					msgs = append(msgs, m) // a producer retry
				}
			}
			kafkatest.Produce(t, w, msgs...)
			time.Sleep(200 * time.Millisecond)
		}
	}()
	env := []string{"CHILD_SCHEMA=" + b.schema, "CHILD_TOPIC_A=" + topicA, "CHILD_TOPIC_B=" + topicB}
	roles := []string{"hop1", "relay", "hop2"}
	procs := map[string]*proctest.Child{}
	for _, r := range roles {
		procs[r] = proctest.Start(t, r, env...)
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	for range 6 {
		victim := roles[rng.IntN(len(roles))]
		// Kill it while it works if it has work; once the pipeline has
		// drained, a kill still tests the restart.
		line := "COMMITTED"
		if victim == "relay" {
			line = "PUBLISHED"
		}
		procs[victim].Saw(line, 20*time.Second)
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		procs[victim].Kill()
		procs[victim] = proctest.Start(t, victim, env...)
	}
	<-produced
	waitCount(t, b.pool, 180*time.Second, n, "SELECT count(DISTINCT token) FROM "+pgx.Identifier{b.schema, "effects"}.Sanitize())
	waitEmpty(t, b)
	for _, p := range procs {
		p.Stop(10 * time.Second)
	}
	checkOnce(t, b.pool, pgx.Identifier{b.schema, "orders"}.Sanitize(), n)
	checkOnce(t, b.pool, pgx.Identifier{b.schema, "effects"}.Sanitize(), n)
}
