package outbox_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/pgtest"
	"github.com/exactlyhq/exactly/internal/proctest"
	"github.com/exactlyhq/exactly/internal/runtest"
	"github.com/exactlyhq/exactly/outbox"
)

func TestMain(m *testing.M) {
	proctest.Main(map[string]func() int{"relay": relayMain, "hop1": hop1Main, "hop2": hop2Main})
	goleak.VerifyTestMain(m)
}

type bundle struct {
	pool   *pgxpool.Pool
	schema string
	topic  string
	ob     *outbox.Outbox
	relay  outbox.RelayConfig
}

func setup(t *testing.T, partitions int) bundle {
	t.Helper()
	pool := pgtest.Pool(t)
	schema := pgtest.Schema(t, pool)
	cfg := outbox.Config{Schema: schema}
	if err := outbox.Migrate(context.Background(), pool, cfg); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	ob, err := outbox.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return bundle{
		pool:   pool,
		schema: schema,
		topic:  kafkatest.Topic(t, partitions),
		ob:     ob,
		relay:  relayConfig(cfg),
	}
}

func relayConfig(cfg outbox.Config) outbox.RelayConfig {
	return outbox.RelayConfig{
		Outbox:       cfg,
		Brokers:      kafkatest.Brokers(),
		PollInterval: 200 * time.Millisecond,
		RetryInitial: 10 * time.Millisecond,
		RetryMax:     200 * time.Millisecond,
		LockInterval: 200 * time.Millisecond,
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	defer func() { _ = recover() }() // logging after the test ended panics
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// startRelay runs a relay until the test ends or stop is called.
func startRelay(t *testing.T, pool *pgxpool.Pool, cfg outbox.RelayConfig) (stop func()) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	r, err := outbox.NewRelay(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return runtest.Background(t, "relay", 30*time.Second, r.Run)
}

func enqueue(t *testing.T, b bundle, msgs ...outbox.Message) []string {
	t.Helper()
	var ids []string
	err := pgx.BeginFunc(context.Background(), b.pool, func(tx pgx.Tx) error {
		var err error
		ids, err = b.ob.EnqueueTx(context.Background(), tx, msgs...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func countRows(t *testing.T, b bundle, table string) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{b.schema, table}.Sanitize()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
