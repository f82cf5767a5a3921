// Package shop is the code the order pipeline's programs share: the
// configuration they read from the environment, the table and topic names,
// the events, the HTTP API, the workers' handlers, setup and reset, and the
// verifier.
package shop

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/kafkasec"
	"github.com/exactlyhq/exactly/outbox"
)

// Defaults of the environment.
const (
	DatabaseURLDefault = "postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable"
	BrokersDefault     = "127.0.0.1:9092"
	SchemaDefault      = "shop"
	TopicPrefixDefault = "shop."
)

// Partitions is the partition count of both topics.
const Partitions = 4

// KeyConcurrency is the workers' consumer.Config.KeyConcurrency: up to this
// many transactions at once per partition, across orders.
const KeyConcurrency = 8

// Names are the schema and topic prefix that keep one pipeline apart from
// another on the same Postgres and Kafka (a test runs its own next to a
// user's demo).
type Names struct {
	// Schema holds the app tables, the inbox, the dead letters, the outbox
	// and the HTTP idempotency keys.
	Schema string
	// TopicPrefix is prepended to the topic and consumer group names.
	TopicPrefix string
}

// Config is what every program reads from the environment.
type Config struct {
	DatabaseURL string
	Kafka
	Names
}

// Kafka is where the brokers are and how to reach them.
type Kafka struct {
	Brokers []string
	// Security is TLS and SASL; zero for plaintext.
	Security kafkasec.Security
}

// FromEnv reads DATABASE_URL, KAFKA_BROKERS, SHOP_SCHEMA and
// SHOP_TOPIC_PREFIX, with the defaults above, and the TLS and SASL
// settings: KAFKA_TLS, KAFKA_CA_FILE, KAFKA_SASL_MECHANISM,
// KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and KAFKA_SASL_ALLOW_PLAINTEXT
// (internal/kafkasec, which the exactly CLI's -kafka-* flags share). SASL
// PLAIN without TLS is refused unless KAFKA_SASL_ALLOW_PLAINTEXT=true.
func FromEnv() (Config, error) {
	c := Config{
		DatabaseURL: cmp.Or(os.Getenv("DATABASE_URL"), DatabaseURLDefault),
		Names:       NamesFromEnv(),
	}
	for _, b := range strings.Split(cmp.Or(os.Getenv("KAFKA_BROKERS"), BrokersDefault), ",") {
		if b = strings.TrimSpace(b); b != "" {
			c.Brokers = append(c.Brokers, b)
		}
	}
	if len(c.Brokers) == 0 {
		return c, errors.New("KAFKA_BROKERS: no broker address")
	}
	settings, err := kafkasec.FromEnv(os.Getenv)
	if err != nil {
		return c, err
	}
	if c.Security, err = settings.Build(); err != nil {
		return c, err
	}
	if c.Schema == "" || len(c.Schema) > 40 {
		return c, fmt.Errorf("SHOP_SCHEMA: %q must be 1 to 40 characters", c.Schema)
	}
	for _, r := range c.TopicPrefix {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return c, fmt.Errorf("SHOP_TOPIC_PREFIX: %q may hold only letters, digits, '.', '_' and '-' (Kafka topic names)", c.TopicPrefix)
		}
	}
	return c, nil
}

// NamesFromEnv reads SHOP_SCHEMA and SHOP_TOPIC_PREFIX.
func NamesFromEnv() Names {
	prefix, ok := os.LookupEnv("SHOP_TOPIC_PREFIX")
	if !ok {
		prefix = TopicPrefixDefault
	}
	return Names{Schema: cmp.Or(os.Getenv("SHOP_SCHEMA"), SchemaDefault), TopicPrefix: prefix}
}

// Env returns the environment that gives a child process this Config's
// database, brokers and names. The TLS and SASL settings are not in it: a
// child started with os.Environ() and Env() reads them from the
// environment this process read them from.
func (c Config) Env() []string {
	return []string{
		"DATABASE_URL=" + c.DatabaseURL,
		"KAFKA_BROKERS=" + strings.Join(c.Brokers, ","),
		"SHOP_SCHEMA=" + c.Schema,
		"SHOP_TOPIC_PREFIX=" + c.TopicPrefix,
	}
}

// OrdersPlaced is the topic of OrderPlaced events.
func (n Names) OrdersPlaced() string { return n.TopicPrefix + "orders.placed" }

// PaymentsCaptured is the topic of PaymentCaptured events.
func (n Names) PaymentsCaptured() string { return n.TopicPrefix + "payments.captured" }

// Topics are both topics.
func (n Names) Topics() []string { return []string{n.OrdersPlaced(), n.PaymentsCaptured()} }

// PaymentsGroup and ShippingGroup are the consumer groups. They carry the
// topic prefix so that two pipelines never share a group.
func (n Names) PaymentsGroup() string { return n.TopicPrefix + "payments" }

// ShippingGroup is the shipping worker's consumer group.
func (n Names) ShippingGroup() string { return n.TopicPrefix + "shipping" }

// Inbox scopes of the two workers: each records the tokens it processed
// under its own scope of the schema's inbox table.
const (
	PaymentsScope = "payments"
	ShippingScope = "shipping"
)

// HTTPKeysTable is the inbox table that stores the API's Idempotency-Keys
// and the responses replayed for them.
const HTTPKeysTable = "http_keys"

// Table returns the quoted, schema-qualified name of an app table.
func (n Names) Table(name string) string { return pgx.Identifier{n.Schema, name}.Sanitize() }

// Outbox is the outbox configuration shared by its writers (the API and the
// payments worker) and the relay.
func (n Names) Outbox() outbox.Config { return outbox.Config{Schema: n.Schema} }

// HTTPKeys is the inbox table of the API's idempotency middleware.
func (n Names) HTTPKeys() inbox.Config { return inbox.Config{Schema: n.Schema, Table: HTTPKeysTable} }

// PaymentsConsumer is the payments worker's consumer configuration, without
// its pool and logger.
func (c Config) PaymentsConsumer() consumer.Config {
	return c.consumer(c.PaymentsGroup(), c.OrdersPlaced(), PaymentsScope)
}

// ShippingConsumer is the shipping worker's consumer configuration.
func (c Config) ShippingConsumer() consumer.Config {
	return c.consumer(c.ShippingGroup(), c.PaymentsCaptured(), ShippingScope)
}

func (c Config) consumer(group, topic, scope string) consumer.Config {
	return consumer.Config{
		Brokers: c.Brokers,
		Dialer:  c.Dialer(),
		GroupID: group,
		Topics:  []string{topic},
		// One inbox table per schema; each worker has its own scope in it,
		// and the dead letters of both go to <schema>.dead_letters.
		Inbox: inbox.Config{Schema: c.Schema, Scope: scope},
		// A SIGKILLed member holds its partitions until the broker misses
		// its heartbeats for SessionTimeout: keep that short so the demo's
		// kills cost seconds, not the default 30s.
		SessionTimeout:    6 * time.Second,
		HeartbeatInterval: time.Second,
		FetchMaxWait:      250 * time.Millisecond,
		// Events of one order are ordered by its key; orders are
		// independent, so a partition's orders run in lanes.
		KeyConcurrency: KeyConcurrency,
	}
}

// Dialer returns the kafka-go Dialer of the consumers and of
// kafka.DialContext: nil (kafka.DefaultDialer) for plaintext.
func (k Kafka) Dialer() *kafka.Dialer {
	if k.Security.IsZero() {
		return nil
	}
	return k.Security.Dialer()
}

// Transport returns the Transport of the relay's writers: nil (the relay's
// own plaintext one) for plaintext.
func (k Kafka) Transport() *kafka.Transport {
	if k.Security.IsZero() {
		return nil
	}
	return k.Security.Transport()
}

// Connect opens a pool of at most maxConns connections, named app in
// pg_stat_activity, and checks that Postgres answers.
func Connect(ctx context.Context, url, app string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = app
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cannot reach Postgres at %s:%d (run `make services`): %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return pool, nil
}

// Logger returns a text logger to stderr for program, at debug level when
// verbose.
func Logger(program string, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("program", program)
}
