package shop

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/outbox"
)

// Setup creates, for the schema and topic prefix in the environment
// (SHOP_SCHEMA, SHOP_TOPIC_PREFIX), everything the pipeline needs. See
// Names.Setup.
func Setup(ctx context.Context, pool *pgxpool.Pool, k Kafka) error {
	return NamesFromEnv().Setup(ctx, pool, k)
}

// Reset drops the schema and deletes the topics and consumer groups named by
// the environment. See Names.Reset.
func Reset(ctx context.Context, pool *pgxpool.Pool, k Kafka) error {
	return NamesFromEnv().Reset(ctx, pool, k)
}

// appTables are the tables of the shop itself. payments and shipments have
// no unique constraint on order_id, and no foreign key, on purpose.
const appTables = `
CREATE TABLE IF NOT EXISTS {{orders}} (
	id           uuid PRIMARY KEY,
	customer     text NOT NULL,
	sku          text NOT NULL,
	amount_cents integer NOT NULL CHECK (amount_cents > 0),
	status       text NOT NULL DEFAULT 'placed' CHECK (status IN ('placed', 'paid', 'shipped')),
	created_at   timestamptz NOT NULL DEFAULT now(),
	paid_at      timestamptz,
	shipped_at   timestamptz
);

-- Deliberately no UNIQUE (order_id) here and on shipments: the inbox is what
-- prevents doubles in this example, and verify must be able to see a double
-- if one ever got through. In production add the unique constraint too, as a
-- second line of defence. (No foreign key either, so that verify can detect
-- a payment or shipment without an order.)
CREATE TABLE IF NOT EXISTS {{payments}} (
	id           bigserial PRIMARY KEY,
	order_id     uuid NOT NULL,
	amount_cents integer NOT NULL,
	created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS payments_order_id_idx ON {{payments}} (order_id);

CREATE TABLE IF NOT EXISTS {{shipments}} (
	id           bigserial PRIMARY KEY,
	order_id     uuid NOT NULL,
	created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS shipments_order_id_idx ON {{shipments}} (order_id);
`

// Setup creates the schema, the app tables, the framework's tables (each
// worker's inbox and dead letters, the outbox, the HTTP keys) and the two
// topics with Partitions partitions. It is idempotent.
func (n Names) Setup(ctx context.Context, pool *pgxpool.Pool, k Kafka) error {
	if err := n.SetupDB(ctx, pool); err != nil {
		return err
	}
	return n.createTopics(ctx, k)
}

// SetupDB is the Postgres half of Setup: the schema, the app tables and the
// framework's tables.
func (n Names) SetupDB(ctx context.Context, pool *pgxpool.Pool) error {
	ddl := strings.NewReplacer("{{orders}}", n.Table("orders"), "{{payments}}", n.Table("payments"), "{{shipments}}", n.Table("shipments")).Replace(appTables)
	// Concurrent CREATE ... IF NOT EXISTS can still collide on the catalog;
	// one transaction under an advisory lock keyed by the schema cannot.
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after Commit
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('shop setup ' || $1))", n.Schema); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+n.quotedSchema()); err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	if _, err := tx.Exec(ctx, ddl); err != nil {
		return fmt.Errorf("create app tables: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	cfg := Config{Names: n}
	for _, c := range []consumer.Config{cfg.PaymentsConsumer(), cfg.ShippingConsumer()} {
		c.Pool = pool
		if err := consumer.Migrate(ctx, pool, c); err != nil {
			return fmt.Errorf("consumer tables of %s: %w", c.GroupID, err)
		}
	}
	if err := outbox.Migrate(ctx, pool, n.Outbox()); err != nil {
		return fmt.Errorf("outbox tables: %w", err)
	}
	if err := inbox.Migrate(ctx, pool, n.HTTPKeys()); err != nil {
		return fmt.Errorf("HTTP keys table: %w", err)
	}
	return nil
}

// Reset drops the schema with everything in it, deletes both topics and
// both consumer groups, and waits until Kafka no longer lists the topics.
// Stop the pipeline's programs first: a running member keeps its group alive
// and may recreate a topic.
func (n Names) Reset(ctx context.Context, pool *pgxpool.Pool, k Kafka) error {
	var errs []error
	if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+n.quotedSchema()+" CASCADE"); err != nil {
		errs = append(errs, fmt.Errorf("drop schema: %w", err))
	}
	if err := n.deleteKafka(ctx, k); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (n Names) quotedSchema() string { return pgx.Identifier{n.Schema}.Sanitize() }

// controller dials the cluster's controller, where topics are created and
// deleted.
func controller(ctx context.Context, k Kafka) (*kafka.Conn, error) {
	d := k.Dialer()
	if d == nil {
		d = kafka.DefaultDialer
	}
	var errs []error
	for _, b := range k.Brokers {
		conn, err := d.DialContext(ctx, "tcp", b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c, err := conn.Controller()
		conn.Close()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return d.DialContext(ctx, "tcp", net.JoinHostPort(c.Host, strconv.Itoa(c.Port)))
	}
	return nil, fmt.Errorf("no Kafka broker answers at %v (run `make services`): %w", k.Brokers, errors.Join(errs...))
}

// client returns a plaintext kafka-go Client for brokers (verify's reads).
func client(brokers []string) *kafka.Client { return Kafka{Brokers: brokers}.client() }

// client returns a kafka-go Client with k's TLS and SASL settings. Its
// Metadata requests never create topics, unlike kafka.Conn.ReadPartitions,
// which asks the broker to auto-create a missing topic (with the broker's
// default partition count).
func (k Kafka) client() *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: 10 * time.Second, Transport: k.Security.Transport()}
}

func closeClient(c *kafka.Client) {
	if t, ok := c.Transport.(*kafka.Transport); ok {
		t.CloseIdleConnections()
	}
}

func (n Names) createTopics(ctx context.Context, k Kafka) error {
	conn, err := controller(ctx, k)
	if err != nil {
		return err
	}
	defer conn.Close()
	var topics []kafka.TopicConfig
	for _, t := range n.Topics() {
		topics = append(topics, kafka.TopicConfig{Topic: t, NumPartitions: Partitions, ReplicationFactor: 1})
	}
	// Idempotent: kafka-go ignores "topic already exists".
	if err := conn.CreateTopics(topics...); err != nil {
		return fmt.Errorf("create topics %v: %w", n.Topics(), err)
	}
	// Wait until every partition has a leader, so that the first produce
	// and fetch do not race the creation; refuse a topic that exists with
	// another partition count.
	cl := k.client()
	defer closeClient(cl)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ready, err := n.topicsReady(ctx, cl)
		if ready {
			return nil
		}
		var wrong *wrongPartitionsError
		if errors.As(err, &wrong) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topics %v not ready after 30s: %v", n.Topics(), err)
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
}

type wrongPartitionsError struct {
	topic string
	have  int
}

func (e *wrongPartitionsError) Error() string {
	return fmt.Sprintf("topic %s exists with %d partitions, want %d (a program touched it before setup and the broker auto-created it?); run reset", e.topic, e.have, Partitions)
}

func (n Names) topicsReady(ctx context.Context, cl *kafka.Client) (bool, error) {
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: n.Topics()})
	if err != nil {
		return false, err
	}
	ready := 0
	for _, t := range md.Topics {
		if t.Error != nil {
			return false, fmt.Errorf("topic %s: %w", t.Name, t.Error)
		}
		if len(t.Partitions) != Partitions {
			return false, &wrongPartitionsError{topic: t.Name, have: len(t.Partitions)}
		}
		for _, p := range t.Partitions {
			if p.Error != nil || p.Leader.Host == "" {
				return false, fmt.Errorf("topic %s partition %d has no leader yet", t.Name, p.ID)
			}
		}
		ready++
	}
	return ready == len(n.Topics()), nil
}

func (n Names) deleteKafka(ctx context.Context, k Kafka) error {
	conn, err := controller(ctx, k)
	if err != nil {
		return err
	}
	defer conn.Close()
	var errs []error
	for _, t := range n.Topics() {
		if err := conn.DeleteTopics(t); err != nil && !errors.Is(err, kafka.UnknownTopicOrPartition) {
			errs = append(errs, fmt.Errorf("delete topic %s: %w", t, err))
		}
	}
	cl := k.client()
	defer closeClient(cl)
	for _, g := range []string{n.PaymentsGroup(), n.ShippingGroup()} {
		if err := deleteGroup(ctx, cl, g); err != nil {
			errs = append(errs, err)
		}
	}
	// Deletion is asynchronous: wait until the topics are gone, so that a
	// setup right after does not find them half deleted.
	deadline := time.Now().Add(30 * time.Second)
	for {
		md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: n.Topics()})
		if err == nil {
			left := 0
			for _, t := range md.Topics {
				if t.Error == nil {
					left++
				}
			}
			if left == 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("topics %v still listed 30s after deletion (%v)", n.Topics(), err))
			break
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
	return errors.Join(errs...)
}

// deleteGroup deletes a consumer group. A group whose members were killed
// keeps them until their session times out (6s for the workers), so a
// non-empty group is retried for a while before reset gives up.
func deleteGroup(ctx context.Context, cl *kafka.Client, group string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := cl.DeleteGroups(ctx, &kafka.DeleteGroupsRequest{GroupIDs: []string{group}})
		if err != nil {
			return fmt.Errorf("delete consumer group %s: %w", group, err)
		}
		err = resp.Errors[group]
		switch {
		case err == nil, errors.Is(err, kafka.GroupIdNotFound):
			return nil
		case !errors.Is(err, kafka.NonEmptyGroup):
			return fmt.Errorf("delete consumer group %s: %w", group, err)
		case time.Now().After(deadline):
			return fmt.Errorf("consumer group %s still has members after 15s: stop the pipeline's workers before reset", group)
		}
		if !sleepCtx(ctx, 250*time.Millisecond) {
			return ctx.Err()
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
