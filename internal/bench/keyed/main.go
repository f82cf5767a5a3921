// Command keyed measures key-level concurrency (consumer.Config.KeyConcurrency)
// side by side with strict partition order, on one backlog of 6 partitions
// and 10,000 keys: a slow handler (2 ms inside its transaction, a round trip
// to Postgres) and the fast one (an insert), each with the option off and
// on. Every run is checked: each message applied once, each key in order.
//
//	go run ./internal/bench/keyed
//
// The last line is
//
//	consumer_keyed: slow_keyed/sequential=X fast_keyed/sequential=Y keyed_msgs_per_s=Z
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/kafkatest"
)

var (
	partitions  = flag.Int("partitions", 6, "partitions of the backlog topic")
	keys        = flag.Int("keys", 10_000, "distinct message keys")
	slowN       = flag.Int("slow-messages", 20_000, "messages the slow handler runs through")
	fastN       = flag.Int("fast-messages", 100_000, "messages the fast handler runs through")
	slowFor     = flag.Duration("slow", 2*time.Millisecond, "time the slow handler spends in its transaction")
	slowIn      = flag.String("slow-in", "postgres", "where the slow handler waits: postgres (SELECT pg_sleep, a round trip) or go (time.Sleep: a call to another service, no CPU here)")
	concurrency = flag.Int("concurrency", 32, "KeyConcurrency of the keyed runs")
	slowBatch   = flag.Int("slow-batch-size", 50, "BatchSize of both slow runs")
	fastBatch   = flag.Int("fast-batch-size", consumer.BatchSizeDefault, "BatchSize of both fast runs")
	conns       = flag.Int("conns", 64, "pool MaxConns of every run")
	maxPending  = flag.Int("max-pending", 0, "MaxPending of the keyed runs (0: the default)")
	rounds      = flag.Int("rounds", 3, "measurements per variant (median reported)")
	only        = flag.String("only", "", "run only the variants whose name contains this (the summary then lacks the others)")
)

type bench struct {
	pool    *pgxpool.Pool
	brokers []string
	logger  *slog.Logger
}

func main() {
	flag.Parse()
	log.SetFlags(log.Ltime)
	ctx := context.Background()
	dsn := cmp.Or(os.Getenv("DATABASE_URL"), "postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable")
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		log.Fatal(err)
	}
	pcfg.MaxConns = int32(*conns)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	b := &bench{pool: pool, brokers: kafkatest.Brokers(), logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if err := b.run(ctx); err != nil {
		log.Fatal(err)
	}
}

func (b *bench) run(ctx context.Context) error {
	log.Printf("keyed: %d partitions, %d keys; slow: %d msgs, %v per message in %s, BatchSize %d; fast: %d msgs, BatchSize %d; KeyConcurrency %d; pool MaxConns %d; %d rounds",
		*partitions, *keys, *slowN, *slowFor, *slowIn, *slowBatch, *fastN, *fastBatch, *concurrency, *conns, *rounds)
	slowTopic, err := b.produce(ctx, *slowN)
	if err != nil {
		return err
	}
	fastTopic, err := b.produce(ctx, *fastN)
	if err != nil {
		return err
	}
	type variant struct {
		name  string
		topic string
		n     int
		batch int
		lanes int
		slow  bool
	}
	variants := []variant{
		{"slow_sequential", slowTopic, *slowN, *slowBatch, 1, true},
		{"slow_keyed", slowTopic, *slowN, *slowBatch, *concurrency, true},
		{"fast_sequential", fastTopic, *fastN, *fastBatch, 1, false},
		{"fast_keyed", fastTopic, *fastN, *fastBatch, *concurrency, false},
	}
	rates := map[string][]float64{}
	for round := range *rounds {
		for i := range variants {
			// Alternate the order of each pair every round.
			v := variants[i]
			if round%2 == 1 {
				v = variants[i^1]
			}
			if !strings.Contains(v.name, *only) {
				continue
			}
			rate, err := b.measure(ctx, v.name, v.topic, v.n, v.batch, v.lanes, v.slow)
			if err != nil {
				return fmt.Errorf("round %d %s: %w", round+1, v.name, err)
			}
			rates[v.name] = append(rates[v.name], rate)
			log.Printf("round %d %-16s %7d msgs: %8.0f msgs/s", round+1, v.name, v.n, rate)
		}
	}
	if *only != "" {
		return nil
	}
	med := func(name string) float64 {
		r := slices.Clone(rates[name])
		slices.Sort(r)
		return r[len(r)/2]
	}
	fmt.Printf("\n%-16s %10s %10s %10s   (median of %d rounds; each run checked: once per message, in order per key)\n", "variant", "msgs/s", "min", "max", *rounds)
	for _, v := range variants {
		fmt.Printf("%-16s %10.0f %10.0f %10.0f\n", v.name, med(v.name), slices.Min(rates[v.name]), slices.Max(rates[v.name]))
	}
	fmt.Printf("consumer_keyed: slow_keyed/sequential=%.1f fast_keyed/sequential=%.2f keyed_msgs_per_s=%.0f\n",
		med("slow_keyed")/med("slow_sequential"), med("fast_keyed")/med("fast_sequential"), med("slow_keyed"))
	return nil
}

// produce writes n messages, keys in round robin with a per-key sequence
// number in the value, to a new topic.
func (b *bench) produce(ctx context.Context, n int) (string, error) {
	topic := "bench-keyed-" + strconv.Itoa(n) + "-" + uuid.NewString()[:8]
	if err := kafkatest.CreateTopic(ctx, topic, *partitions); err != nil {
		return "", err
	}
	w := &kafka.Writer{Addr: kafka.TCP(b.brokers...), Topic: topic, Balancer: &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchSize: 2000, BatchBytes: 4 << 20, BatchTimeout: time.Millisecond}
	defer w.Close()
	msgs := make([]kafka.Message, 0, 10_000)
	for i := range n {
		msgs = append(msgs, kafka.Message{
			Key:     []byte("key-" + strconv.Itoa(i%*keys)),
			Value:   []byte(strconv.Itoa(i / *keys)),
			Headers: []kafka.Header{{Key: exactly.Header, Value: []byte(uuid.Must(uuid.NewV7()).String())}},
		})
		if len(msgs) == cap(msgs) || i == n-1 {
			// A new topic's metadata may reach the writer late.
			for try := 0; ; try++ {
				err := w.WriteMessages(ctx, msgs...)
				if err == nil {
					break
				}
				if !strings.Contains(err.Error(), "Unknown Topic Or Partition") || try == 300 {
					return "", err
				}
				time.Sleep(100 * time.Millisecond)
			}
			msgs = msgs[:0]
		}
	}
	return topic, nil
}

// measure consumes topic from the start with a new group and schema until
// every offset is committed, checks the effects and returns msgs/s.
func (b *bench) measure(ctx context.Context, name, topic string, n, batch, lanes int, slow bool) (float64, error) {
	suffix := uuid.NewString()[:8]
	schema := "bench_keyed_" + name + "_" + suffix
	if _, err := b.pool.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		return 0, err
	}
	defer func() {
		if _, err := b.pool.Exec(context.WithoutCancel(ctx), "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			log.Printf("drop schema %s: %v", schema, err)
		}
	}()
	effects := pgx.Identifier{schema, "effects"}.Sanitize()
	if _, err := b.pool.Exec(ctx, "CREATE TABLE "+effects+" (id bigserial PRIMARY KEY, token text NOT NULL, key text NOT NULL, seq int NOT NULL)"); err != nil {
		return 0, err
	}
	group := "bench-keyed-" + name + "-" + suffix
	cfg := consumer.Config{
		Brokers:        b.brokers,
		GroupID:        group,
		Topics:         []string{topic},
		Pool:           b.pool,
		Inbox:          inbox.Config{Schema: schema},
		BatchSize:      batch,
		KeyConcurrency: lanes,
		Logger:         b.logger,
	}
	if lanes > 1 {
		cfg.MaxPending = *maxPending
	}
	if err := consumer.Migrate(ctx, b.pool, cfg); err != nil {
		return 0, err
	}
	insert := "INSERT INTO " + effects + " (token, key, seq) VALUES ($1, $2, $3)"
	sleep := fmt.Sprintf("SELECT pg_sleep(%f)", slowFor.Seconds())
	c, err := consumer.New(cfg, consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		switch {
		case slow && *slowIn == "go":
			time.Sleep(*slowFor)
		case slow:
			if _, err := tx.Exec(ctx, sleep); err != nil {
				return err
			}
		}
		seq, err := strconv.Atoi(string(m.Value))
		if err != nil {
			return consumer.Permanent(err)
		}
		_, err = tx.Exec(ctx, insert, m.Token.String(), string(m.Key), seq)
		return err
	}))
	if err != nil {
		return 0, err
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	elapsed, werr := b.waitCommitted(ctx, group, topic, int64(n), done)
	stop()
	if err := <-done; err != nil && werr == nil {
		werr = err
	}
	if werr != nil {
		return 0, werr
	}
	var total, distinct, outOfOrder int
	if err := b.pool.QueryRow(ctx, "SELECT count(*), count(DISTINCT token) FROM "+effects).Scan(&total, &distinct); err != nil {
		return 0, err
	}
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT seq - lag(seq) OVER (PARTITION BY key ORDER BY id) AS step FROM `+effects+`) s WHERE step <> 1`).Scan(&outOfOrder); err != nil {
		return 0, err
	}
	if total != n || distinct != n || outOfOrder != 0 {
		return 0, fmt.Errorf("CORRECTNESS: %d effects for %d tokens, want %d of each; %d out of order", total, distinct, n, outOfOrder)
	}
	return float64(n) / elapsed.Seconds(), nil
}

// waitCommitted waits until group committed n offsets of topic and returns
// the time since it was called.
func (b *bench) waitCommitted(ctx context.Context, group, topic string, n int64, done <-chan error) (time.Duration, error) {
	start := time.Now()
	for {
		select {
		case err := <-done:
			return 0, errors.Join(errors.New("the consumer stopped"), err)
		case <-time.After(20 * time.Millisecond):
		}
		offsets, err := kafkatest.Committed(ctx, group, topic, *partitions)
		if err != nil && !strings.Contains(err.Error(), "no committed") {
			continue
		}
		var sum int64
		for _, o := range offsets {
			sum += max(o, 0)
		}
		if sum >= n {
			return time.Since(start), nil
		}
		if time.Since(start) > 10*time.Minute {
			return 0, fmt.Errorf("group %s committed %d of %d offsets in 10 minutes", group, sum, n)
		}
	}
}
