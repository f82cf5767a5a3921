package outbox_test

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
	"github.com/exactlyhq/exactly/outbox"
)

// ExampleOutbox_EnqueueTx stores an order and enqueues its OrderPlaced
// event in one transaction: both commit, or neither does. The second
// transaction rolls back (the card is declined), and its event is never
// published.
func ExampleOutbox_EnqueueTx() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, cmp.Or(os.Getenv("DATABASE_URL"), "postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	schema := createSchema(ctx, pool) // your application would use the default, "exactly"
	defer dropSchema(pool, schema)

	cfg := outbox.Config{Schema: schema}
	if err := outbox.Migrate(ctx, pool, cfg); err != nil { // the outbox and its dead letters
		log.Fatal(err)
	}
	ob, err := outbox.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	orders := pgx.Identifier{schema, "orders"}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+orders+" (id text PRIMARY KEY, sku text NOT NULL)"); err != nil {
		log.Fatal(err)
	}

	placeOrder := func(id, sku string, charge func() error) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO "+orders+" VALUES ($1, $2)", id, sku); err != nil {
				return err
			}
			_, err := ob.EnqueueTx(ctx, tx, outbox.Message{
				Topic: "orders.placed",
				Key:   []byte(id), // events of one order are published in order
				Value: []byte(`{"sku":"` + sku + `"}`),
			})
			if err != nil {
				return err
			}
			return charge()
		})
	}
	fmt.Println("order-1:", placeOrder("order-1", "tea", func() error { return nil }))
	fmt.Println("order-2:", placeOrder("order-2", "coffee", func() error { return errors.New("card declined") }))

	// What the relay will publish: only the committed order's event.
	var n int
	var key string
	err = pool.QueryRow(ctx, "SELECT count(*), min(convert_from(key, 'UTF8')) FROM "+pgx.Identifier{schema, "outbox"}.Sanitize()).Scan(&n, &key)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d message to publish, for %s\n", n, key)
	// Output:
	// order-1: <nil>
	// order-2: card declined
	// 1 message to publish, for order-1
}

// ExampleRelay publishes what committed transactions enqueued. Each message
// carries its message id in the Idempotency-Key header, which the
// downstream consumer's inbox claims, so a message the relay publishes a
// second time (after a crash) is applied once. Run a relay per process as a
// long-lived service: relays share the outbox's shards.
func ExampleRelay() {
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

	cfg := outbox.Config{Schema: schema}
	if err := outbox.Migrate(ctx, pool, cfg); err != nil {
		log.Fatal(err)
	}
	ob, err := outbox.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	// Enqueue outside a transaction of yours (Enqueue begins one); in your
	// code, EnqueueTx beside the writes the messages announce.
	ids, err := ob.Enqueue(ctx, pool,
		outbox.Message{Topic: topic, Key: []byte("order-1"), Value: []byte("placed")},
		outbox.Message{Topic: topic, Key: []byte("order-1"), Value: []byte("paid")},
		outbox.Message{Topic: topic, Key: []byte("order-1"), Value: []byte("shipped")})
	if err != nil {
		log.Fatal(err)
	}

	relay, err := outbox.NewRelay(pool, outbox.RelayConfig{Outbox: cfg, Brokers: brokers})
	if err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(runCtx) }()

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	for i := range ids {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s %s, message id as enqueued: %t\n", m.Key, m.Value, header(m, exactly.Header) == ids[i])
	}
	stop()
	if err := <-done; err != nil { // nil once in-flight rounds finished
		log.Fatal(err)
	}
	// Output:
	// order-1 placed, message id as enqueued: true
	// order-1 paid, message id as enqueued: true
	// order-1 shipped, message id as enqueued: true
}

// header returns the value of m's header named key.
func header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
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
