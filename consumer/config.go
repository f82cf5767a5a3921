package consumer

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/sqlname"
	"github.com/exactlyhq/exactly/internal/tracelog"
)

// Defaults of Config.
const (
	BatchSizeDefault              = 500
	BatchWaitDefault              = 20 * time.Millisecond
	MaxAttemptsDefault            = 5
	KeyConcurrencyDefault         = 1 // off: one transaction at a time per partition
	RetryInitialDefault           = 100 * time.Millisecond
	RetryMaxDefault               = 10 * time.Second
	MaxMessageBytesDefault        = 1 << 20
	DeadLetterTableDefault        = "dead_letters"
	ShutdownTimeoutDefault        = 10 * time.Second
	SessionTimeoutDefault         = 30 * time.Second
	HeartbeatIntervalDefault      = 3 * time.Second
	FetchMaxWaitDefault           = 500 * time.Millisecond
	StartupTimeoutDefault         = 10 * time.Second
	PartitionWatchIntervalDefault = 5 * time.Second
	MaintenanceIntervalDefault    = 10 * time.Minute
	PruneBatchSizeDefault         = 1000
)

// RetentionMin is the shortest InboxRetention and DeadLetterRetention
// accepted: a token retired that young turns the next redelivery of its
// message into a second application. An age below it is almost certainly a
// mistake of unit (`exactly prune` refuses it too, unless -force).
const RetentionMin = time.Hour

// Config configures a Consumer. Brokers, GroupID, Topics and Pool are
// required.
type Config struct {
	// Brokers are Kafka bootstrap addresses, host:port.
	Brokers []string
	// GroupID is the Kafka consumer group.
	GroupID string
	// Topics are consumed by the group.
	Topics []string
	// Pool runs the batch transactions: one connection per partition being
	// processed at a time, so size it at least to the partitions a member
	// may be assigned.
	Pool *pgxpool.Pool

	// Inbox names the inbox table and scope. Scope defaults to GroupID, so
	// two groups consuming one topic each apply every message once.
	Inbox inbox.Config
	// Token finds each message's idempotency token. Defaults to the
	// exactly.Header header, Idempotency-Key (FromHeader("")), which the
	// outbox relay sets.
	Token TokenSource
	// OnDuplicate, when set, is called for every delivery whose token an
	// earlier delivery already applied (a redelivery, a producer's retry),
	// in the batch's transaction, with the result the first delivery stored
	// with Message.SetResult, or nil. Request/reply over Kafka uses it to
	// send the stored reply again, enqueued through the outbox in tx. Its
	// error is handled like a handler's (retries, then a dead letter). It
	// runs after the handler calls of the batch's fresh messages. A message
	// that was dead-lettered claimed no token: its next delivery is handled,
	// not passed here. Defaults to nil: duplicates are skipped without a
	// call, as cheaply as before.
	OnDuplicate DuplicateFunc
	// AtLeastOnce switches the inbox off: no token is read or claimed, and
	// a message delivered again (after a crash, a rebalance, a producer
	// retry) is handled again. Batching, ordering, retries, dead letters
	// and offset commits after the database commit are unchanged. For
	// handlers that are idempotent by themselves (upserts keyed by the
	// message), and to measure what the inbox costs. Defaults to false.
	AtLeastOnce bool
	// DeadLetterTable is the dead-letter table, in the inbox's schema.
	// Defaults to "dead_letters".
	DeadLetterTable string

	// InboxRetention, when set, makes the consumer retire its inbox's
	// tokens older than this, by the database's clock, every
	// MaintenanceInterval: for a partitioned inbox it drops the partitions
	// whose tokens are all older, for every scope at once (inbox
	// Store.DropPartitions), and prunes its scope's tokens that no time
	// partition holds; for a single-table inbox it prunes its scope in
	// batches (Store.Prune). Keep it above every redelivery window (topic
	// retention, offset expiry, dead-letter replays: docs/runbook.md,
	// "Retention"); at least RetentionMin. Every member of every group
	// sharing the table may run it; they take turns under a lock. Defaults
	// to 0: the consumer retires nothing; run `exactly prune` on a schedule.
	InboxRetention time.Duration
	// DeadLetterRetention, when set, makes the consumer delete its scope's
	// dead letters resolved (replayed or discarded) longer ago than this,
	// every MaintenanceInterval. Unresolved dead letters are never deleted.
	// At least RetentionMin. Defaults to 0: kept forever.
	DeadLetterRetention time.Duration
	// MaintenanceInterval is how often the consumer maintains its tables in
	// the background, from Run's start: for a partitioned inbox it creates
	// the partitions of the coming periods (Store.CreatePartitions), so that
	// they exist before their tokens, and it applies InboxRetention and
	// DeadLetterRetention. A failure is logged and tried again at the next
	// round. Defaults to 10m.
	MaintenanceInterval time.Duration
	// PruneBatchSize is how many rows one statement of the background
	// retention deletes. Defaults to 1000.
	PruneBatchSize int

	// BatchSize is the most messages of one partition processed in one
	// transaction. Defaults to 500.
	BatchSize int
	// BatchWait is how long a batch waits to fill once its first message
	// arrived. Defaults to 20ms.
	BatchWait time.Duration
	// KeyConcurrency, above 1, runs the messages of one partition
	// concurrently across keys: up to KeyConcurrency transactions at once
	// per partition, each over a batch of messages whose keys no other
	// transaction holds, so that messages of one key never run at once nor
	// out of order (messages without a key keep their order among
	// themselves). The committed offset is the watermark, the first message
	// not settled; after a crash, messages beyond it that committed are
	// redelivered and skipped by the inbox. A failing message holds only its
	// key. Do not use it when handlers need order across keys. A member then
	// needs up to KeyConcurrency connections per assigned partition (the
	// pool's MaxConns caps them: lanes wait for a connection). For slow
	// handlers, a BatchSize near MaxPending/KeyConcurrency keeps every lane
	// busy. Defaults to 1: strict partition order (keyed.go).
	KeyConcurrency int
	// MaxPending is how many messages of a partition beyond its watermark
	// KeyConcurrency holds in memory (plus at most one fetch): when it is
	// reached, fetching waits, so a stuck key stalls its partition rather
	// than growing memory. A member holds at most its assigned partitions ×
	// MaxPending messages. Defaults to BatchSize × (KeyConcurrency + 1).
	MaxPending int
	// MaxAttempts is how often a message's handler may fail before the
	// message is dead-lettered. Defaults to 5; 1 dead-letters on the first
	// failure.
	MaxAttempts int
	// RetryInitial and RetryMax bound the exponential backoff between
	// retries, both of a failing message and of a batch that hit a database
	// or Kafka outage (which is retried forever). Default to 100ms and 10s.
	RetryInitial, RetryMax time.Duration
	// MaxMessageBytes is the largest key plus value accepted; a larger
	// message is dead-lettered as oversized, not handled. Defaults to 1 MiB.
	MaxMessageBytes int

	// StartOffset is where a group with no committed offset starts:
	// kafka.FirstOffset or kafka.LastOffset. Defaults to kafka.FirstOffset.
	StartOffset int64
	// SessionTimeout and HeartbeatInterval are the group membership timers.
	// A consumer that dies without leaving holds its partitions for
	// SessionTimeout. Default to 30s and 3s.
	SessionTimeout, HeartbeatInterval time.Duration
	// ReadUncommitted reads records of transactions that are still open or
	// were aborted, as Kafka's read_uncommitted isolation does. By default
	// the consumer reads committed: it stops at the last stable offset and
	// drops records of aborted transactions, whose effects must not happen
	// since for Kafka those records never existed. Transaction markers
	// (control records) are skipped in either mode. Defaults to false.
	ReadUncommitted bool
	// PartitionWatchInterval is how often each member checks its topics'
	// partition counts; a change (partitions added) makes the group
	// rebalance so that the new partitions are consumed. Defaults to 5s.
	PartitionWatchInterval time.Duration
	// FetchMaxWait is how long the broker may hold an empty fetch.
	// Defaults to 500ms.
	FetchMaxWait time.Duration
	// TransactionTimeout, when set, bounds one attempt at a batch's
	// transaction, handlers included: past it the attempt is cancelled
	// (pgx closes its connection) and retried like an outage. It is also
	// the transaction's idle_in_transaction_session_timeout, so that a
	// session whose client vanished without closing the connection (a
	// half-open TCP connection: a failover, a NAT entry gone) ends and
	// releases its inbox claims. Without it such a batch waits for the
	// operating system's TCP timers, minutes to hours, with its partition
	// stalled. Set it well above the slowest batch (BatchSize messages):
	// a batch that cannot finish within it is retried whole, forever, and
	// a single slow message is not dead-lettered for it. Defaults to 0:
	// no bound.
	TransactionTimeout time.Duration
	// ShutdownTimeout bounds how long Run spends finishing in-flight batches
	// after its context ends; what is not committed to Postgres by then is
	// rolled back and redelivered later. Defaults to 10s.
	ShutdownTimeout time.Duration
	// StartupTimeout bounds Run's initial checks that Postgres, the tables
	// and Kafka are reachable. Defaults to 10s.
	StartupTimeout time.Duration

	// Logger receives structured logs. Defaults to slog.Default().
	Logger *slog.Logger
	// MeterProvider receives metrics. Defaults to a no-op provider.
	MeterProvider metric.MeterProvider
	// TracerProvider receives spans: one per transaction attempt over a
	// batch and one per message handled, skipped or dead-lettered, each a
	// child of the producer's span from the message's traceparent header
	// (tracing.go). The handler's ctx carries its message's span. Nil (the
	// default): no spans, and no cost.
	TracerProvider trace.TracerProvider
	// Dialer connects to Kafka (TLS, SASL). Defaults to kafka.DefaultDialer.
	Dialer *kafka.Dialer
}

func (c Config) withDefaults() Config {
	c.Inbox.Scope = cmp.Or(c.Inbox.Scope, c.GroupID)
	c.Inbox.Schema = cmp.Or(c.Inbox.Schema, inbox.SchemaDefault)
	if c.Token == nil {
		c.Token = FromHeader("")
	}
	c.DeadLetterTable = cmp.Or(c.DeadLetterTable, DeadLetterTableDefault)
	c.BatchSize = cmp.Or(c.BatchSize, BatchSizeDefault)
	c.BatchWait = cmp.Or(c.BatchWait, BatchWaitDefault)
	c.MaxAttempts = cmp.Or(c.MaxAttempts, MaxAttemptsDefault)
	c.KeyConcurrency = cmp.Or(c.KeyConcurrency, KeyConcurrencyDefault)
	c.MaxPending = cmp.Or(c.MaxPending, c.BatchSize*(c.KeyConcurrency+1))
	c.RetryInitial = cmp.Or(c.RetryInitial, RetryInitialDefault)
	c.RetryMax = cmp.Or(c.RetryMax, RetryMaxDefault)
	c.MaxMessageBytes = cmp.Or(c.MaxMessageBytes, MaxMessageBytesDefault)
	c.StartOffset = cmp.Or(c.StartOffset, kafka.FirstOffset)
	c.SessionTimeout = cmp.Or(c.SessionTimeout, SessionTimeoutDefault)
	c.HeartbeatInterval = cmp.Or(c.HeartbeatInterval, HeartbeatIntervalDefault)
	c.FetchMaxWait = cmp.Or(c.FetchMaxWait, FetchMaxWaitDefault)
	c.PartitionWatchInterval = cmp.Or(c.PartitionWatchInterval, PartitionWatchIntervalDefault)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, ShutdownTimeoutDefault)
	c.StartupTimeout = cmp.Or(c.StartupTimeout, StartupTimeoutDefault)
	c.MaintenanceInterval = cmp.Or(c.MaintenanceInterval, MaintenanceIntervalDefault)
	c.PruneBatchSize = cmp.Or(c.PruneBatchSize, PruneBatchSizeDefault)
	c.Inbox.PruneBatchSize = cmp.Or(c.Inbox.PruneBatchSize, c.PruneBatchSize)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Logger = tracelog.New(c.Logger)
	if c.Dialer == nil {
		c.Dialer = kafka.DefaultDialer
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("consumer: Config.Brokers: at least one broker is required"))
	}
	for _, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			errs = append(errs, fmt.Errorf("consumer: Config.Brokers: %q is not host:port: %w", b, err))
		}
	}
	if c.GroupID == "" {
		errs = append(errs, errors.New("consumer: Config.GroupID: required"))
	}
	if len(c.Topics) == 0 {
		errs = append(errs, errors.New("consumer: Config.Topics: at least one topic is required"))
	}
	for _, t := range c.Topics {
		if t == "" {
			errs = append(errs, errors.New("consumer: Config.Topics: empty topic name"))
		}
	}
	if c.Pool == nil {
		errs = append(errs, errors.New("consumer: Config.Pool: required"))
	}
	if c.AtLeastOnce && c.OnDuplicate != nil {
		errs = append(errs, errors.New("consumer: Config.OnDuplicate: AtLeastOnce claims no tokens, so no delivery is known as a duplicate"))
	}
	if err := sqlname.Check("consumer: Config.DeadLetterTable", c.DeadLetterTable+"_scope_reason_idx"); err != nil {
		errs = append(errs, err)
	}
	if c.BatchSize < 1 || c.BatchSize > inbox.MaxBatch {
		errs = append(errs, fmt.Errorf("consumer: Config.BatchSize: %d is not in 1..%d", c.BatchSize, inbox.MaxBatch))
	}
	for name, d := range map[string]time.Duration{
		"BatchWait": c.BatchWait, "RetryInitial": c.RetryInitial, "RetryMax": c.RetryMax,
		"SessionTimeout": c.SessionTimeout, "HeartbeatInterval": c.HeartbeatInterval,
		"FetchMaxWait": c.FetchMaxWait, "PartitionWatchInterval": c.PartitionWatchInterval, "TransactionTimeout": c.TransactionTimeout, "ShutdownTimeout": c.ShutdownTimeout, "StartupTimeout": c.StartupTimeout,
		"MaintenanceInterval": c.MaintenanceInterval,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("consumer: Config.%s: negative duration %v", name, d))
		}
	}
	if c.RetryMax < c.RetryInitial {
		errs = append(errs, fmt.Errorf("consumer: Config.RetryMax: %v is less than RetryInitial %v", c.RetryMax, c.RetryInitial))
	}
	if c.HeartbeatInterval >= c.SessionTimeout {
		errs = append(errs, fmt.Errorf("consumer: Config.HeartbeatInterval: %v must be less than SessionTimeout %v", c.HeartbeatInterval, c.SessionTimeout))
	}
	if c.KeyConcurrency < 1 {
		errs = append(errs, fmt.Errorf("consumer: Config.KeyConcurrency: must be at least 1, got %d", c.KeyConcurrency))
	}
	if c.MaxPending < c.BatchSize {
		errs = append(errs, fmt.Errorf("consumer: Config.MaxPending: %d is less than BatchSize %d", c.MaxPending, c.BatchSize))
	}
	for name, d := range map[string]time.Duration{"InboxRetention": c.InboxRetention, "DeadLetterRetention": c.DeadLetterRetention} {
		if d != 0 && d < RetentionMin {
			errs = append(errs, fmt.Errorf("consumer: Config.%s: %v is below RetentionMin (%v): a token or record retired that young defeats its purpose", name, d, RetentionMin))
		}
	}
	if c.InboxRetention != 0 && c.AtLeastOnce {
		errs = append(errs, errors.New("consumer: Config.InboxRetention: AtLeastOnce claims no tokens to retire"))
	}
	if c.PruneBatchSize < 1 {
		errs = append(errs, fmt.Errorf("consumer: Config.PruneBatchSize: must be positive, got %d", c.PruneBatchSize))
	}
	if c.MaxAttempts < 1 {
		errs = append(errs, fmt.Errorf("consumer: Config.MaxAttempts: must be at least 1, got %d", c.MaxAttempts))
	}
	if c.MaxMessageBytes < 1 {
		errs = append(errs, fmt.Errorf("consumer: Config.MaxMessageBytes: must be positive, got %d", c.MaxMessageBytes))
	}
	if c.StartOffset != kafka.FirstOffset && c.StartOffset != kafka.LastOffset {
		errs = append(errs, fmt.Errorf("consumer: Config.StartOffset: must be kafka.FirstOffset or kafka.LastOffset, got %d", c.StartOffset))
	}
	return errors.Join(errs...)
}

func (c Config) isolation() kafka.IsolationLevel {
	if c.ReadUncommitted {
		return kafka.ReadUncommitted
	}
	return kafka.ReadCommitted
}

func (c Config) deadLetterVars() map[string]string {
	return map[string]string{
		"Table":         pgx.Identifier{c.Inbox.Schema, c.DeadLetterTable}.Sanitize(),
		"Unique":        pgx.Identifier{c.DeadLetterTable + "_message_key"}.Sanitize(),
		"ReasonIndex":   pgx.Identifier{c.DeadLetterTable + "_scope_reason_idx"}.Sanitize(),
		"ResolvedIndex": pgx.Identifier{c.DeadLetterTable + "_resolved_idx"}.Sanitize(),
		"Schema":        pgx.Identifier{c.Inbox.Schema}.Sanitize(),
		"Attempts":      pgx.Identifier{c.Inbox.Schema, c.DeadLetterTable + "_attempts"}.Sanitize(),
		"TxTimeoutMs":   strconv.FormatInt(c.TransactionTimeout.Milliseconds(), 10),
	}
}
