package outbox

import (
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/internal/sqlname"
	"github.com/exactlyhq/exactly/internal/sqltmpl"
	"github.com/exactlyhq/exactly/migrate"
)

// Defaults of Config.
const (
	SchemaDefault       = "exactly"
	TableDefault        = "outbox"
	ShardsDefault       = 4
	NotifyWindowDefault = 10 * time.Millisecond
	// MaxMessageBytesDefault is Kafka's default largest message
	// (max.message.bytes, message.max.bytes), 1 MiB.
	MaxMessageBytesDefault = 1 << 20
)

// MaxShards bounds Config.Shards.
const MaxShards = 1024

// MaxEnqueue is the most messages one EnqueueTx call accepts.
const MaxEnqueue = 10000

// Config names the outbox table and how messages are sharded. Writers and
// relays of one table must use the same Config.
type Config struct {
	// Schema holds the outbox tables. Defaults to "exactly".
	Schema string
	// Table is the outbox table; its dead letters go to Table +
	// "_dead_letters". Defaults to "outbox".
	Table string
	// Shards splits the outbox by a hash of the message key. Each shard is
	// published in id order by one relay at a time, so per-key order holds
	// while relays share the work. Change it only with an empty outbox (see
	// the package documentation). Defaults to 4.
	Shards int
	// NotifyWindow is the least time between two wake-up notifications sent
	// by one process. A NOTIFY takes a cluster-wide lock at commit, so one per
	// transaction costs writers throughput; the relay keeps polling for a
	// while after each wake-up to catch what was enqueued without one.
	// Defaults to 10ms; -1 sends no notifications (the relay polls).
	NotifyWindow time.Duration
	// MaxMessageBytes is the largest message EnqueueTx accepts: its key,
	// value and headers (keys and values, the trace context EnqueueTx adds
	// included), in bytes. A larger one is refused with ErrMessageTooLarge
	// rather than committed for Kafka to reject it later, and it bounds what
	// a relay holds in memory for one row. Only writers check it. Keep it at
	// or below the topics' max.message.bytes and the relay writer's
	// BatchBytes (both 1 MiB by default). Those count framing on top (some
	// 100 bytes with the message id header the relay adds), so a message
	// within that of their limit passes EnqueueTx and is still refused when
	// published, then dead-lettered as too_large. Defaults to 1 MiB
	// (MaxMessageBytesDefault).
	MaxMessageBytes int
	// TracerProvider receives a span per EnqueueTx call ("create TOPIC", a
	// producer span, child of ctx's span), whose context the messages
	// carry in their traceparent header. Nil (the default): no span, and
	// the messages carry ctx's trace context.
	TracerProvider trace.TracerProvider
}

func (c Config) withDefaults() Config {
	c.Schema = cmp.Or(c.Schema, SchemaDefault)
	c.Table = cmp.Or(c.Table, TableDefault)
	c.Shards = cmp.Or(c.Shards, ShardsDefault)
	c.NotifyWindow = cmp.Or(c.NotifyWindow, NotifyWindowDefault)
	c.MaxMessageBytes = cmp.Or(c.MaxMessageBytes, MaxMessageBytesDefault)
	return c
}

func (c Config) validate() error {
	if err := sqlname.Check("outbox: Config.Schema", c.Schema); err != nil {
		return err
	}
	if err := sqlname.Check("outbox: Config.Table", c.Table); err != nil {
		return err
	}
	if err := sqlname.Check("outbox: Config.Table (with suffix _dead_letters)", c.Table+"_dead_letters"); err != nil {
		return err
	}
	if c.Shards < 1 || c.Shards > MaxShards {
		return fmt.Errorf("outbox: Config.Shards: %d is not in 1..%d", c.Shards, MaxShards)
	}
	if c.NotifyWindow < -1 {
		return fmt.Errorf("outbox: Config.NotifyWindow: %v; use -1 to disable notifications", c.NotifyWindow)
	}
	if c.MaxMessageBytes < 1 {
		return fmt.Errorf("outbox: Config.MaxMessageBytes: must be positive, got %d", c.MaxMessageBytes)
	}
	return nil
}

func (c Config) vars() map[string]string {
	return map[string]string{
		"Schema":         pgx.Identifier{c.Schema}.Sanitize(),
		"Table":          pgx.Identifier{c.Schema, c.Table}.Sanitize(),
		"DeadLetters":    pgx.Identifier{c.Schema, c.Table + "_dead_letters"}.Sanitize(),
		"PendingIndex":   pgx.Identifier{c.Table + "_pending_idx"}.Sanitize(),
		"PublishedIndex": pgx.Identifier{c.Table + "_published_idx"}.Sanitize(),
		"ResolvedIndex":  pgx.Identifier{c.Table + "_resolved_idx"}.Sanitize(), // on the dead letters
	}
}

// Channel returns the LISTEN/NOTIFY channel on which writers wake the
// relays of the table.
func (c Config) Channel() string {
	c = c.withDefaults()
	h := fnv.New64a()
	h.Write([]byte(c.Schema + "." + c.Table))
	return fmt.Sprintf("exactly_outbox_%x", h.Sum64())
}

//go:embed migrations/*.sql
var migrationFS embed.FS

//go:embed sql/*.sql
var queryFS embed.FS

// Migrations returns the versioned migrations of the outbox tables.
func Migrations(cfg Config) (migrate.Line, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return migrate.Line{}, err
	}
	return migrate.Load(migrationFS, "migrations", "outbox", cfg.Schema, cfg.Table, cfg.vars())
}

// Migrate applies the outbox migrations that are not yet applied, under an
// advisory lock.
func Migrate(ctx context.Context, db exactly.DB, cfg Config) error {
	line, err := Migrations(cfg)
	if err != nil {
		return err
	}
	return migrate.Up(ctx, db, line)
}

// Message is a message to publish.
type Message struct {
	// Topic is required: a name Kafka accepts (at most 249 of a-z, A-Z,
	// 0-9, '.', '_' and '-'; not "." or ".."), or EnqueueTx refuses the
	// message rather than commit a row Kafka can never take.
	Topic string
	// Key decides the partition (murmur2, like the Java client) and the
	// shard. Messages with equal keys are published in enqueue order.
	Key []byte
	// Value is the payload.
	Value []byte
	// Headers travel with the message. Their keys are text: valid UTF-8
	// without NUL bytes (EnqueueTx refuses others); values are any bytes.
	// The relay adds [exactly.Header] with the message id, unless Headers
	// already carry one: a message replayed from a dead letter keeps the
	// token it was first sent with.
	Headers []kafka.Header
	// ID, when set, is the message id (a UUID) instead of a new UUIDv7: use
	// it to re-publish a message under its original token.
	ID string
}

// Outbox enqueues messages into one outbox table.
type Outbox struct {
	cfg        Config
	sql        queries
	tracer     trace.Tracer // nil without Config.TracerProvider
	lastNotify atomic.Int64 // unix nanoseconds
}

// New returns an Outbox for the table cfg names. It does not touch the
// database.
func New(cfg Config) (*Outbox, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var q queries
	if err := sqltmpl.Load(queryFS, "sql", cfg.vars(), &q); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	o := &Outbox{cfg: cfg, sql: q}
	if cfg.TracerProvider != nil {
		o.tracer = cfg.TracerProvider.Tracer(instrumentation)
	}
	return o, nil
}

// Config returns the configuration with defaults applied.
func (o *Outbox) Config() Config { return o.cfg }

// ErrInvalidMessage reports a message EnqueueTx refuses.
var ErrInvalidMessage = errors.New("outbox: invalid message")

// ErrMessageTooLarge reports a message larger than Config.MaxMessageBytes.
// It wraps ErrInvalidMessage.
var ErrMessageTooLarge = fmt.Errorf("%w: too large", ErrInvalidMessage)

type header struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
}

// EnqueueTx adds msgs to the outbox inside tx, in one round trip, and returns
// their message ids. They are published if and only if tx commits, each
// with its id in the [exactly.Header] header. Trace context is added to their
// headers: W3C traceparent (which consumers read) and whatever else the
// global OpenTelemetry propagator writes, of the span Config.TracerProvider
// starts for the call, or else of ctx's span.
//
// It refuses the whole call, enqueuing nothing, when a message is invalid
// (an error wrapping ErrInvalidMessage naming the message and what is wrong:
// its topic, a header key, its ID) or larger than Config.MaxMessageBytes
// (ErrMessageTooLarge, which wraps ErrInvalidMessage).
func (o *Outbox) EnqueueTx(ctx context.Context, tx pgx.Tx, msgs ...Message) ([]string, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	if len(msgs) > MaxEnqueue {
		return nil, fmt.Errorf("%w: %d messages in one call, more than %d", ErrInvalidMessage, len(msgs), MaxEnqueue)
	}
	ctx, span := o.startCreate(ctx, msgs)
	ids, err := o.enqueue(ctx, tx, msgs)
	o.endCreate(span, ids, err)
	return ids, err
}

func (o *Outbox) enqueue(ctx context.Context, tx pgx.Tx, msgs []Message) ([]string, error) {
	carrier := propagation.MapCarrier{}
	propagation.NewCompositeTextMapPropagator(otel.GetTextMapPropagator(), propagation.TraceContext{}).Inject(ctx, carrier)

	shards := make([]int32, len(msgs))
	ids := make([]string, len(msgs))
	topics := make([]string, len(msgs))
	keys := make([][]byte, len(msgs))
	values := make([][]byte, len(msgs))
	headers := make([][]byte, len(msgs))
	traceBytes := 0
	for k, v := range carrier {
		traceBytes += len(k) + len(v)
	}
	for i, m := range msgs {
		if m.Topic == "" {
			return nil, fmt.Errorf("%w: message %d has no topic", ErrInvalidMessage, i)
		}
		if why := checkTopic(m.Topic); why != "" {
			return nil, fmt.Errorf("%w: message %d: topic %q %s", ErrInvalidMessage, i, m.Topic, why)
		}
		size := len(m.Key) + len(m.Value) + traceBytes
		for j, h := range m.Headers {
			size += len(h.Key) + len(h.Value)
			// Header keys are text: JSON would replace invalid UTF-8 with
			// U+FFFD, and Postgres refuses a NUL in jsonb.
			if !utf8.ValidString(h.Key) {
				return nil, fmt.Errorf("%w: message %d: header %d (%q): its key is not valid UTF-8", ErrInvalidMessage, i, j, h.Key)
			}
			if strings.IndexByte(h.Key, 0) >= 0 {
				return nil, fmt.Errorf("%w: message %d: header %d (%q): its key holds a NUL byte", ErrInvalidMessage, i, j, h.Key)
			}
		}
		if size > o.cfg.MaxMessageBytes {
			return nil, fmt.Errorf("%w: message %d (topic %q) has %d bytes of key, value and headers, more than Config.MaxMessageBytes %d",
				ErrMessageTooLarge, i, m.Topic, size, o.cfg.MaxMessageBytes)
		}
		id := m.ID
		if id == "" {
			// A UUIDv7, time-ordered: a downstream inbox stores a UUID
			// token as its 16 bytes, so new tokens land at the right edge
			// of its index (make bench-inbox compares random tokens).
			u, err := uuid.NewV7()
			if err != nil {
				return nil, fmt.Errorf("outbox: message %d: new message id: %w", i, err)
			}
			id = u.String()
		} else if !isUUID(id) {
			return nil, fmt.Errorf("%w: message %d: ID %q is not a UUID", ErrInvalidMessage, i, id)
		}
		hs := make([]header, 0, len(m.Headers)+len(carrier))
		idHeaders := 0
		for _, h := range m.Headers {
			// Consumers read the header in any case and refuse a message
			// that has two: the relay would add a second beside a
			// lower-case one.
			if strings.EqualFold(h.Key, exactly.Header) {
				idHeaders++
				if m.ID != "" {
					return nil, fmt.Errorf("%w: message %d sets both ID and the %s header", ErrInvalidMessage, i, h.Key)
				}
				if idHeaders > 1 {
					return nil, fmt.Errorf("%w: message %d has %d %s headers; consumers dead-letter such a message", ErrInvalidMessage, i, idHeaders, exactly.Header)
				}
			}
			hs = append(hs, header{Key: h.Key, Value: h.Value})
		}
		for k, v := range carrier {
			hs = append(hs, header{Key: k, Value: []byte(v)})
		}
		hj, err := json.Marshal(hs)
		if err != nil {
			return nil, err
		}
		shards[i] = int32(shardOf(m.Key, id, o.cfg.Shards))
		ids[i], topics[i], keys[i], values[i], headers[i] = id, m.Topic, m.Key, m.Value, hj
	}
	b := &pgx.Batch{}
	b.Queue(o.sql.Enqueue, shards, ids, topics, keys, values, headers)
	if o.shouldNotify() {
		b.Queue(o.sql.Notify, o.cfg.Channel())
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("outbox: enqueue: %w", err)
	}
	return ids, nil
}

// MaxTopicLength is the longest topic name Kafka accepts.
const MaxTopicLength = 249

// checkTopic returns why Kafka would refuse topic as a topic name, or "".
func checkTopic(topic string) string {
	if len(topic) > MaxTopicLength {
		return fmt.Sprintf("has %d bytes, more than Kafka's %d", len(topic), MaxTopicLength)
	}
	if topic == "." || topic == ".." {
		return "is not a topic name Kafka accepts"
	}
	for i := 0; i < len(topic); i++ {
		c := topic[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Sprintf("holds %q at byte %d: Kafka topic names are made of a-z, A-Z, 0-9, '.', '_' and '-'", c, i)
		}
	}
	return ""
}

// isUUID reports whether s is a UUID in canonical 8-4-4-4-12 form.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// shouldNotify lets one notification through per NotifyWindow per process.
func (o *Outbox) shouldNotify() bool {
	if o.cfg.NotifyWindow < 0 {
		return false
	}
	now := time.Now().UnixNano()
	last := o.lastNotify.Load()
	if now-last < int64(o.cfg.NotifyWindow) {
		return false
	}
	return o.lastNotify.CompareAndSwap(last, now)
}

// Enqueue adds msgs in a transaction of its own. Prefer EnqueueTx inside the
// transaction that makes the change the messages announce: that is what
// makes publishing atomic with it.
func (o *Outbox) Enqueue(ctx context.Context, db exactly.DB, msgs ...Message) ([]string, error) {
	var ids []string
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var err error
		ids, err = o.EnqueueTx(ctx, tx, msgs...)
		return err
	})
	return ids, err
}

// ShardOf returns the shard of a message with the given key and id: a hash
// of the key, or of the id for a message without a key.
func (c Config) ShardOf(key []byte, id string) int {
	return shardOf(key, id, c.withDefaults().Shards)
}

// shardOf hashes the key (or, without a key, the message id) to a shard.
func shardOf(key []byte, id string, shards int) int {
	h := fnv.New32a()
	if len(key) > 0 {
		h.Write(key)
	} else {
		h.Write([]byte(id))
	}
	return int(h.Sum32() % uint32(shards))
}

// queries are the statements rendered from sql/*.sql.
type queries struct {
	CheckTable       string `sql:"check_table"`
	DeadLetter       string `sql:"dead_letter"`
	Delete           string `sql:"delete"`
	Enqueue          string `sql:"enqueue"`
	Fetch            string `sql:"fetch"`
	FetchIDs         string `sql:"fetch_ids"`
	HeldBack         string `sql:"held_back"`
	LockShard        string `sql:"lock_shard"`
	MarkPublished    string `sql:"mark_published"`
	Notify           string `sql:"notify"`
	Outside          string `sql:"outside"`
	PrunePublished   string `sql:"prune_published"`
	PruneDeadLetters string `sql:"prune_dead_letters"`
	DBNow            string `sql:"db_now"`
	RecordFailure    string `sql:"record_failure"`
	SessionTimeout   string `sql:"session_timeout"`
	Shards           string `sql:"shards"`
}
