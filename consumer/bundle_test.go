package consumer_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/pgtest"
	"github.com/exactlyhq/exactly/internal/proctest"
	"github.com/exactlyhq/exactly/internal/runtest"
)

func TestMain(m *testing.M) {
	proctest.Main(map[string]func() int{"consumer": childMain})
	goleak.VerifyTestMain(m)
}

// bundle is one test's topic, schema, effects table and consumer config.
type bundle struct {
	pool    *pgxpool.Pool
	schema  string
	topic   string
	writer  *kafka.Writer
	cfg     consumer.Config
	effects string // quoted effects table
}

func setup(t *testing.T, partitions int) bundle {
	t.Helper()
	return setupWith(t, partitions, nil)
}

// setupWith is setup with the consumer's configuration changed by mutate
// before the tables are created.
func setupWith(t *testing.T, partitions int, mutate func(*consumer.Config)) bundle {
	t.Helper()
	pool := pgtest.Pool(t)
	schema := pgtest.Schema(t, pool)
	topic := kafkatest.Topic(t, partitions)
	b := bundle{
		pool:    pool,
		schema:  schema,
		topic:   topic,
		writer:  kafkatest.Writer(t, topic),
		cfg:     testConfig(pool, schema, topic, "group-"+pgtest.RandomSuffix()),
		effects: pgx.Identifier{schema, "effects"}.Sanitize(),
	}
	b.cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if mutate != nil {
		mutate(&b.cfg)
	}
	ctx := context.Background()
	if err := consumer.Migrate(ctx, pool, b.cfg); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if _, err := pool.Exec(ctx, createEffects(b.effects)); err != nil {
		t.Fatal(err)
	}
	return b
}

func createEffects(table string) string {
	return `CREATE TABLE IF NOT EXISTS ` + table + ` (
		id bigserial PRIMARY KEY, token text NOT NULL, key text NOT NULL, value text NOT NULL,
		kafka_partition int NOT NULL, kafka_offset bigint NOT NULL, attempt int NOT NULL)`
}

func testConfig(pool *pgxpool.Pool, schema, topic, group string) consumer.Config {
	return consumer.Config{
		Brokers:           kafkatest.Brokers(),
		GroupID:           group,
		Topics:            []string{topic},
		Pool:              pool,
		Inbox:             inbox.Config{Schema: schema},
		BatchSize:         100,
		BatchWait:         5 * time.Millisecond,
		RetryInitial:      5 * time.Millisecond,
		RetryMax:          100 * time.Millisecond,
		SessionTimeout:    6 * time.Second, // the broker's minimum
		HeartbeatInterval: time.Second,
		FetchMaxWait:      100 * time.Millisecond,
	}
}

// testWriter sends logs to t.Log, and drops them once the test is over.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	defer func() { _ = recover() }() // logging after the test ended panics
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// insertEffect is the handler most tests use: one row per message.
func insertEffect(table string) consumer.HandlerFunc {
	return func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		_, err := tx.Exec(ctx, "INSERT INTO "+table+" (token, key, value, kafka_partition, kafka_offset, attempt) VALUES ($1, $2, $3, $4, $5, $6)",
			m.Token.String(), string(m.Key), string(m.Value), m.Partition, m.Offset, m.Attempt)
		return err
	}
}

// newConsumer returns a consumer calling one per message: through New, or
// with batch through NewBatch with a handler that calls one for each
// message in turn.
func newConsumer(t *testing.T, cfg consumer.Config, batch bool, one consumer.HandlerFunc) *consumer.Consumer {
	t.Helper()
	var c *consumer.Consumer
	var err error
	if batch {
		c, err = consumer.NewBatch(cfg, consumer.BatchHandlerFunc(func(ctx context.Context, tx pgx.Tx, ms []consumer.Message) error {
			for _, m := range ms {
				if err := one(ctx, tx, m); err != nil {
					return err
				}
			}
			return nil
		}))
	} else {
		c, err = consumer.New(cfg, one)
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// start runs c until the test ends or the returned stop is called; stop
// waits for Run to return and fails the test on a Run error.
func start(t *testing.T, c *consumer.Consumer) (stop func()) {
	t.Helper()
	return runtest.Background(t, "consumer", 60*time.Second, c.Run)
}

// msgs returns n messages with keys key-0..key-(keys-1) in round robin and a
// per-key sequence number in the value, each with a UUID-like token.
func msgs(prefix string, n, keys int) []kafka.Message {
	out := make([]kafka.Message, n)
	for i := range out {
		k := i % keys
		out[i] = kafka.Message{
			Key:     []byte(fmt.Sprintf("key-%d", k)),
			Value:   []byte(strconv.Itoa(i / keys)),
			Headers: []kafka.Header{{Key: "Idempotency-Key", Value: []byte(fmt.Sprintf("%s-%d", prefix, i))}},
		}
	}
	return out
}

// waitCount polls query (returning one integer) until it reaches want.
func waitCount(t *testing.T, pool *pgxpool.Pool, timeout time.Duration, want int, query string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var got int
	for {
		err := pool.QueryRow(context.Background(), query, args...).Scan(&got)
		if err == nil && got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %d, have %d (err %v): %s", timeout, want, got, err, query)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkEffects asserts every token in want has exactly one effect and
// nothing else was applied, and that effects of each key are in order.
func checkEffects(t *testing.T, b bundle, want int) {
	t.Helper()
	ctx := context.Background()
	var total, distinct int
	if err := b.pool.QueryRow(ctx, "SELECT count(*), count(DISTINCT token) FROM "+b.effects).Scan(&total, &distinct); err != nil {
		t.Fatal(err)
	}
	if total != want || distinct != want {
		t.Fatalf("effects: %d rows for %d distinct tokens, want exactly %d of each (doubled: %d, lost: %d)", total, distinct, want, total-distinct, want-distinct)
	}
	var outOfOrder int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM (
		SELECT value::int - lag(value::int) OVER (PARTITION BY key ORDER BY id) AS step FROM `+b.effects+`) s
		WHERE step <= 0`).Scan(&outOfOrder); err != nil {
		t.Fatal(err)
	}
	if outOfOrder != 0 {
		t.Fatalf("%d effects applied out of per-key order", outOfOrder)
	}
}
