package consumer_test

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
)

// ExampleNew records one payment per order. The handler writes through the
// transaction that claimed the message's Idempotency-Key, so the payment
// and the key commit together; order-1 delivered a second time (a producer's
// retry) finds its key and is skipped.
func ExampleNew() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, cmp.Or(os.Getenv("DATABASE_URL"), "postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	brokers := strings.Split(cmp.Or(os.Getenv("KAFKA_BROKERS"), "127.0.0.1:9092"), ",")
	schema, topic := createSchema(ctx, pool), createTopic(ctx, brokers) // yours exist already
	defer dropSchema(pool, schema)
	defer deleteTopic(brokers, topic)

	payments := pgx.Identifier{schema, "payments"}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+payments+" (order_id text NOT NULL, amount int NOT NULL)"); err != nil {
		log.Fatal(err)
	}
	cfg := consumer.Config{
		Brokers: brokers,
		GroupID: "payments-" + schema,
		Topics:  []string{topic},
		Pool:    pool,
		Inbox:   inbox.Config{Schema: schema},
	}
	if err := consumer.Migrate(ctx, pool, cfg); err != nil { // the inbox and dead-letter tables
		log.Fatal(err)
	}
	c, err := consumer.New(cfg, consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		_, err := tx.Exec(ctx, "INSERT INTO "+payments+" VALUES ($1, $2)", string(m.Key), string(m.Value))
		return err // an error rolls the message back; it is retried, then dead-lettered
	}))
	if err != nil {
		log.Fatal(err)
	}

	produce(ctx, brokers, topic,
		order("order-1", "10"), order("order-2", "25"), order("order-1", "10"), order("order-3", "5"))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	waitRows(ctx, pool, payments, 3) // a real consumer runs until it is told to stop
	stop()
	if err := <-done; err != nil { // nil: in-flight batches and offsets were committed
		log.Fatal(err)
	}

	rows, err := pool.Query(ctx, "SELECT order_id, amount FROM "+payments+" ORDER BY order_id")
	if err != nil {
		log.Fatal(err)
	}
	var id string
	var amount int
	_, err = pgx.ForEachRow(rows, []any{&id, &amount}, func() error {
		fmt.Println(id, amount)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// order-1 10
	// order-2 25
	// order-3 5
}

// ExampleNewBatch stores events in bulk: the batch handler receives every
// fresh message of a batch at once (duplicates already removed, in partition
// order) and copies them into the table in one round trip, in the
// transaction that claimed their keys.
func ExampleNewBatch() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, cmp.Or(os.Getenv("DATABASE_URL"), "postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	brokers := strings.Split(cmp.Or(os.Getenv("KAFKA_BROKERS"), "127.0.0.1:9092"), ",")
	schema, topic := createSchema(ctx, pool), createTopic(ctx, brokers)
	defer dropSchema(pool, schema)
	defer deleteTopic(brokers, topic)

	if _, err := pool.Exec(ctx, "CREATE TABLE "+pgx.Identifier{schema, "events"}.Sanitize()+" (order_id text, amount int)"); err != nil {
		log.Fatal(err)
	}
	cfg := consumer.Config{Brokers: brokers, GroupID: "events-" + schema, Topics: []string{topic}, Pool: pool, Inbox: inbox.Config{Schema: schema}}
	if err := consumer.Migrate(ctx, pool, cfg); err != nil {
		log.Fatal(err)
	}
	c, err := consumer.NewBatch(cfg, consumer.BatchHandlerFunc(func(ctx context.Context, tx pgx.Tx, msgs []consumer.Message) error {
		_, err := tx.CopyFrom(ctx, pgx.Identifier{schema, "events"}, []string{"order_id", "amount"},
			pgx.CopyFromSlice(len(msgs), func(i int) ([]any, error) {
				amount, err := strconv.Atoi(string(msgs[i].Value))
				return []any{string(msgs[i].Key), amount}, err
			}))
		return err
	}))
	if err != nil {
		log.Fatal(err)
	}

	produce(ctx, brokers, topic,
		order("order-1", "10"), order("order-2", "25"), order("order-2", "25"), order("order-1", "10"), order("order-3", "5"))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	waitRows(ctx, pool, pgx.Identifier{schema, "events"}.Sanitize(), 3)
	stop()
	if err := <-done; err != nil {
		log.Fatal(err)
	}

	var n, total int
	err = pool.QueryRow(ctx, "SELECT count(*), sum(amount) FROM "+pgx.Identifier{schema, "events"}.Sanitize()).Scan(&n, &total)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d events, %d in total\n", n, total)
	// Output:
	// 3 events, 40 in total
}

// order is an order's message as a producer sends it: the order id as the
// key, and as the Idempotency-Key header the consumer claims.
func order(id, amount string) kafka.Message {
	return kafka.Message{Key: []byte(id), Value: []byte(amount),
		Headers: []kafka.Header{{Key: exactly.Header, Value: []byte(id)}}}
}

// produce writes msgs to topic, in order.
func produce(ctx context.Context, brokers []string, topic string, msgs ...kafka.Message) {
	transport := &kafka.Transport{}
	defer transport.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Transport: transport, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		log.Fatal(err)
	}
}

// waitRows waits until table holds n rows.
func waitRows(ctx context.Context, pool *pgxpool.Pool, table string, n int) {
	for {
		var got int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&got); err != nil {
			log.Fatal(err)
		}
		if got >= n {
			return
		}
		select {
		case <-ctx.Done():
			log.Fatalf("%s holds %d rows, want %d: %v", table, got, n, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// createSchema creates a schema of its own for an example, so that examples
// and tests can share a database.
func createSchema(ctx context.Context, pool *pgxpool.Pool) string {
	name := "example_" + strings.ToLower(rand.Text()[:12])
	if _, err := pool.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{name}.Sanitize()); err != nil {
		log.Fatal(err)
	}
	return name
}

// dropSchema drops an example's schema and everything in it.
func dropSchema(pool *pgxpool.Pool, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := pool.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{name}.Sanitize()+" CASCADE"); err != nil {
		log.Print(err)
	}
}

// createTopic creates a topic of one partition with a random name, and
// waits until it has a leader.
func createTopic(ctx context.Context, brokers []string) string {
	name := "example-" + strings.ToLower(rand.Text()[:12])
	conn, err := controller(ctx, brokers)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	if err := conn.CreateTopics(kafka.TopicConfig{Topic: name, NumPartitions: 1, ReplicationFactor: 1}); err != nil {
		log.Fatal(err)
	}
	for {
		ps, err := conn.ReadPartitions(name)
		if err == nil && len(ps) == 1 && ps[0].Leader.Host != "" {
			return name
		}
		select {
		case <-ctx.Done():
			log.Fatalf("topic %s has no leader: %v", name, errors.Join(err, ctx.Err()))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// deleteTopic deletes an example's topic.
func deleteTopic(brokers []string, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := controller(ctx, brokers)
	if err != nil {
		log.Print(err)
		return
	}
	defer conn.Close()
	if err := conn.DeleteTopics(name); err != nil {
		log.Print(err)
	}
}

// controller connects to the cluster's controller, which creates and
// deletes topics.
func controller(ctx context.Context, brokers []string) (*kafka.Conn, error) {
	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return nil, err
	}
	c, err := conn.Controller()
	conn.Close()
	if err != nil {
		return nil, err
	}
	return kafka.DialContext(ctx, "tcp", net.JoinHostPort(c.Host, strconv.Itoa(c.Port)))
}
