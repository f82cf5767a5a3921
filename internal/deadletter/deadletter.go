// Package deadletter reads, replays and discards the dead letters of the
// consumers and of the outbox: what `exactly dead-letters`, `exactly
// outbox-dead-letters` and the console share, so that both keep the same
// guarantees.
//
// # Replays
//
// A replay enqueues the dead letter's message into the outbox in the same
// transaction that marks it replayed; a discard marks it discarded. Each
// dead letter is resolved in a transaction of its own, under the outbox
// table's replay lock (replay_lock.sql), after locking its unresolved row:
//
//   - Effectively once: the message is published if and only if the
//     transaction commits, and a second replay, from another terminal or
//     the console, finds the row resolved and enqueues nothing.
//   - Per-key order: one replay or discard at a time per outbox table,
//     across processes, so replays enqueue in the order they run; a
//     selection is resolved oldest first; a key goes back to the shard its
//     other rows are in, or the replay is refused ([Store.CheckShards]).
//   - The replay carries one token, the message's own or one derived from
//     where it was read ([ReplayHeaders]).
package deadletter

import (
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/sqltmpl"
	"github.com/exactlyhq/exactly/outbox"
)

// ErrNotFound is returned for a dead letter that does not exist.
var ErrNotFound = errors.New("not found")

// Config names the tables.
type Config struct {
	// Schema of the tables. Defaults to inbox.SchemaDefault.
	Schema string
	// DeadLetterTable is the consumers' dead-letter table. Defaults to
	// consumer.DeadLetterTableDefault.
	DeadLetterTable string
	// OutboxTable is the outbox replays go through; its dead letters are in
	// OutboxTable_dead_letters. Defaults to outbox.TableDefault.
	OutboxTable string
	// Shards is the writers' outbox.Config.Shards. Defaults to
	// outbox.ShardsDefault.
	Shards int
	// ShardsSetting names where Shards comes from in errors that ask for
	// another value ("-shards"). Defaults to "Shards".
	ShardsSetting string
}

// Store reads and resolves dead letters.
type Store struct {
	db  exactly.DB
	cfg Config
	ob  *outbox.Outbox
	sql queries
}

//go:embed sql/*.sql
var queryFS embed.FS

type queries struct {
	ConsumerList    string `sql:"consumer_list"`
	ConsumerLock    string `sql:"consumer_lock"`
	ConsumerPage    string `sql:"consumer_page"`
	ConsumerResolve string `sql:"consumer_resolve"`
	ConsumerShow    string `sql:"consumer_show"`
	ConsumerSummary string `sql:"consumer_summary"`
	MaxShard        string `sql:"max_shard"`
	OutboxList      string `sql:"outbox_list"`
	OutboxLock      string `sql:"outbox_lock"`
	OutboxPage      string `sql:"outbox_page"`
	OutboxResolve   string `sql:"outbox_resolve"`
	OutboxShow      string `sql:"outbox_show"`
	OutboxSummary   string `sql:"outbox_summary"`
	ReplayLock      string `sql:"replay_lock"`
}

// New returns a Store of the tables cfg names in db.
func New(db exactly.DB, cfg Config) (*Store, error) {
	cfg.Schema = cmp.Or(cfg.Schema, inbox.SchemaDefault)
	cfg.DeadLetterTable = cmp.Or(cfg.DeadLetterTable, consumer.DeadLetterTableDefault)
	cfg.OutboxTable = cmp.Or(cfg.OutboxTable, outbox.TableDefault)
	cfg.Shards = cmp.Or(cfg.Shards, outbox.ShardsDefault)
	cfg.ShardsSetting = cmp.Or(cfg.ShardsSetting, "Shards")
	ob, err := outbox.New(outbox.Config{Schema: cfg.Schema, Table: cfg.OutboxTable, Shards: cfg.Shards})
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, cfg: cfg, ob: ob}
	err = sqltmpl.Load(queryFS, "sql", map[string]string{
		"DeadLetters":       pgx.Identifier{cfg.Schema, cfg.DeadLetterTable}.Sanitize(),
		"Outbox":            pgx.Identifier{cfg.Schema, cfg.OutboxTable}.Sanitize(),
		"OutboxDeadLetters": pgx.Identifier{cfg.Schema, cfg.OutboxTable + "_dead_letters"}.Sanitize(),
	}, &s.sql)
	return s, err
}

// Config returns the configuration with its defaults applied.
func (s *Store) Config() Config { return s.cfg }

// State selects dead letters by whether an operator resolved them.
type State int

const (
	Unresolved State = iota // neither replayed nor discarded; the zero value
	Resolved                // replayed or discarded
	All                     // either
)

// Filter selects dead letters. Zero fields select any.
type Filter struct {
	Scope  string // the consumer's inbox scope; consumer dead letters only
	Topic  string
	Reason string
	// Since and Until bound when they were dead-lettered: created_at of a
	// consumer's, dead_at of the outbox's; Until is exclusive.
	Since, Until time.Time
	State        State
	IDs          []int64
	// MaxID keeps ids up to and including MaxID: where the next page of a
	// listing starts, and the snapshot of a selection confirmed by a person,
	// which rows dead-lettered since must not join.
	MaxID int64
	// Limit caps the rows. Defaults to 100.
	Limit int
	// NewestFirst orders by id descending, for pages; otherwise oldest
	// first, the order replays resolve a selection in.
	NewestFirst bool
}

func (f Filter) common() []any {
	ids := f.IDs
	if ids == nil {
		ids = []int64{}
	}
	var maxID *int64
	if f.MaxID > 0 {
		maxID = &f.MaxID
	}
	return []any{optional(f.Reason), optionalTime(f.Since), optionalTime(f.Until),
		f.State != Resolved, f.State != Unresolved, ids, maxID, cmp.Or(f.Limit, 100)}
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func optionalTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// Header is a Kafka header of a dead letter's message.
type Header struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
}

// Consumer is a dead letter of a consumer. Value, Headers and MessageTime
// are read by [Store.Consumer] only; a list holds at most the first 256
// bytes of Key.
type Consumer struct {
	ID          int64      `json:"id"`
	Scope       string     `json:"scope"`
	Token       string     `json:"token,omitempty"`
	Reason      string     `json:"reason"`
	Error       string     `json:"error"`
	Attempts    int        `json:"attempts"`
	Topic       string     `json:"topic"`
	Partition   int        `json:"partition"`
	Offset      int64      `json:"offset"`
	CreatedAt   time.Time  `json:"created_at"`
	ResolvedAt  *time.Time `json:"resolved_at,omitempty"`
	Resolution  string     `json:"resolution,omitempty"`
	Key         []byte     `json:"key"`
	KeySize     *int       `json:"key_bytes"` // nil: a null key
	ValueSize   int        `json:"value_bytes"`
	Value       []byte     `json:"value,omitempty"`
	Headers     []Header   `json:"headers,omitempty"`
	MessageTime *time.Time `json:"message_time,omitempty"`
}

func (d *Consumer) listed() []any {
	return []any{&d.ID, &d.Scope, &d.Token, &d.Reason, &d.Error, &d.Attempts, &d.Topic, &d.Partition, &d.Offset,
		&d.CreatedAt, &d.ResolvedAt, &d.Resolution, &d.Key, &d.KeySize, &d.ValueSize}
}

// Outbox is a dead letter of the outbox: a committed message Kafka
// rejected. Value and Headers are read by [Store.Outbox] only; a list holds
// at most the first 256 bytes of Key.
type Outbox struct {
	ID         int64      `json:"id"`
	MessageID  string     `json:"message_id"`
	Topic      string     `json:"topic"`
	Key        []byte     `json:"key"`
	KeySize    *int       `json:"key_bytes"` // nil: a null key
	ValueSize  int        `json:"value_bytes"`
	Reason     string     `json:"reason"`
	Error      string     `json:"error"`
	Rejections int        `json:"rejections"`
	Attempts   int        `json:"attempts"`
	CreatedAt  time.Time  `json:"created_at"`
	DeadAt     time.Time  `json:"dead_at"`
	ResolvedAt *time.Time `json:"resolved_at,omitempty"`
	Resolution string     `json:"resolution,omitempty"`
	Value      []byte     `json:"value,omitempty"`
	Headers    []Header   `json:"headers,omitempty"`
}

func (d *Outbox) listed() []any {
	return []any{&d.ID, &d.MessageID, &d.Topic, &d.Key, &d.KeySize, &d.ValueSize, &d.Reason, &d.Error, &d.Rejections, &d.Attempts,
		&d.CreatedAt, &d.DeadAt, &d.ResolvedAt, &d.Resolution}
}

// ConsumerList returns the consumer dead letters f selects.
func (s *Store) ConsumerList(ctx context.Context, f Filter) ([]Consumer, error) {
	query := s.sql.ConsumerList
	if f.NewestFirst {
		query = s.sql.ConsumerPage
	}
	rows, err := s.db.Query(ctx, query, append([]any{optional(f.Scope), optional(f.Topic)}, f.common()...)...)
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	out := []Consumer{}
	var d Consumer
	_, err = pgx.ForEachRow(rows, d.listed(), func() error {
		out = append(out, d)
		d = Consumer{}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	return out, nil
}

// Consumer returns the consumer dead letter id with its message; the error
// wraps ErrNotFound when there is none.
func (s *Store) Consumer(ctx context.Context, id int64) (Consumer, error) {
	var d Consumer
	var keys []string
	var values [][]byte
	err := s.db.QueryRow(ctx, s.sql.ConsumerShow, id).Scan(append(d.listed(), &d.Value, &keys, &values, &d.MessageTime)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return d, fmt.Errorf("dead letter %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return d, fmt.Errorf("dead letter %d: %w", id, err)
	}
	for i, k := range keys {
		d.Headers = append(d.Headers, Header{Key: k, Value: values[i]})
	}
	return d, nil
}

// OutboxList returns the outbox dead letters f selects; f.Scope must be
// empty.
func (s *Store) OutboxList(ctx context.Context, f Filter) ([]Outbox, error) {
	if f.Scope != "" {
		return nil, errors.New("outbox dead letters have no scope")
	}
	query := s.sql.OutboxList
	if f.NewestFirst {
		query = s.sql.OutboxPage
	}
	rows, err := s.db.Query(ctx, query, append([]any{optional(f.Topic)}, f.common()...)...)
	if err != nil {
		return nil, fmt.Errorf("outbox dead letters: %w", err)
	}
	out := []Outbox{}
	var d Outbox
	_, err = pgx.ForEachRow(rows, d.listed(), func() error {
		out = append(out, d)
		d = Outbox{}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("outbox dead letters: %w", err)
	}
	return out, nil
}

// Outbox returns the outbox dead letter id with its message; the error
// wraps ErrNotFound when there is none.
func (s *Store) Outbox(ctx context.Context, id int64) (Outbox, error) {
	var d Outbox
	var headers []byte
	err := s.db.QueryRow(ctx, s.sql.OutboxShow, id).Scan(append(d.listed(), &d.Value, &headers)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return d, fmt.Errorf("outbox dead letter %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return d, fmt.Errorf("outbox dead letter %d: %w", id, err)
	}
	if err := json.Unmarshal(headers, &d.Headers); err != nil {
		return d, fmt.Errorf("outbox dead letter %d: headers: %w", id, err)
	}
	return d, nil
}

// Count is a number of unresolved dead letters of one reason (and scope).
type Count struct {
	Scope  string    `json:"scope,omitempty"`
	Reason string    `json:"reason"`
	Count  int64     `json:"count"`
	Oldest time.Time `json:"oldest,omitzero"`
	Newest time.Time `json:"newest,omitzero"`
}

// ConsumerSummary counts the unresolved consumer dead letters by scope and
// reason.
func (s *Store) ConsumerSummary(ctx context.Context) ([]Count, error) {
	rows, err := s.db.Query(ctx, s.sql.ConsumerSummary)
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	out := []Count{}
	var c Count
	_, err = pgx.ForEachRow(rows, []any{&c.Scope, &c.Reason, &c.Count, &c.Oldest, &c.Newest}, func() error {
		out = append(out, c)
		return nil
	})
	return out, err
}

// OutboxSummary counts the unresolved outbox dead letters by reason.
func (s *Store) OutboxSummary(ctx context.Context) ([]Count, error) {
	rows, err := s.db.Query(ctx, s.sql.OutboxSummary)
	if err != nil {
		return nil, fmt.Errorf("outbox dead letters: %w", err)
	}
	out := []Count{}
	var c Count
	_, err = pgx.ForEachRow(rows, []any{&c.Reason, &c.Count, &c.Oldest, &c.Newest}, func() error {
		out = append(out, c)
		return nil
	})
	return out, err
}

// ParseAge reads a duration that may use a "d" (days) suffix: 30d, 720h.
func ParseAge(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		d, err := time.ParseDuration(n + "h")
		if err == nil && (d > math.MaxInt64/24 || d < math.MinInt64/24) {
			return 0, fmt.Errorf("%q is longer than a time.Duration holds (about 106751d)", s)
		}
		return d * 24, err
	}
	return time.ParseDuration(s)
}

// ParseTime reads an RFC 3339 time or an age before now ("24h", "7d");
// the zero time for "".
func ParseTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := ParseAge(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor an age like 24h or 7d", s)
	}
	return now.Add(-d), nil
}
