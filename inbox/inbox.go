package inbox

import (
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/internal/sqlname"
	"github.com/exactlyhq/exactly/internal/sqltmpl"
	"github.com/exactlyhq/exactly/migrate"
)

// Defaults of Config.
const (
	SchemaDefault          = "exactly"
	TableDefault           = "inbox"
	ScopeDefault           = "default"
	PruneBatchSizeDefault  = 1000
	PartitionPeriodDefault = 24 * time.Hour
	PartitionsAheadDefault = 3
)

// MaxBatch is the most tokens one ClaimBatch call accepts. Larger batches
// gain nothing measurable and hold row locks longer.
const MaxBatch = 10000

// Config configures a Store. The zero Config is valid.
type Config struct {
	// Schema holds the inbox table. Defaults to "exactly".
	Schema string
	// Table is the inbox table's name. Defaults to "inbox".
	Table string
	// Scope separates tokens: equal tokens in different scopes do not
	// collide. Use one scope per consumer group, tenant or endpoint.
	// Defaults to "default".
	Scope string
	// PruneBatchSize is how many tokens Prune deletes per transaction.
	// Defaults to 1000.
	PruneBatchSize int

	// Layout is how the table is organised, chosen when Migrate creates it:
	// LayoutSingle, one table whose retention deletes row by row, or
	// LayoutPartitioned, partitions by UUIDv7 token time that retire whole
	// (see the package documentation). A Store refuses to claim in a table
	// of the other layout. Defaults to LayoutSingle.
	Layout Layout
	// PartitionPeriod is the span of token time one partition of the
	// partitioned layout holds: a whole number of minutes, counted from the
	// Unix epoch, so that a day runs from 00:00 to 24:00 UTC. Tokens are
	// kept up to one period longer than the retention asked for; every claim
	// of a duplicate reads through all partitions' plans, so keep the count
	// of partitions (retention / period + PartitionsAhead) below about 50.
	// Defaults to 24h.
	PartitionPeriod time.Duration
	// PartitionsAhead is how many periods after the current one
	// CreatePartitions prepares, so that partitions exist before their
	// tokens arrive even when maintenance stops for a while. Defaults to 3;
	// -1 prepares the current period only.
	PartitionsAhead int
}

func (c Config) withDefaults() Config {
	c.Schema = cmp.Or(c.Schema, SchemaDefault)
	c.Table = cmp.Or(c.Table, TableDefault)
	c.Scope = cmp.Or(c.Scope, ScopeDefault)
	c.PruneBatchSize = cmp.Or(c.PruneBatchSize, PruneBatchSizeDefault)
	c.Layout = cmp.Or(c.Layout, LayoutSingle)
	c.PartitionPeriod = cmp.Or(c.PartitionPeriod, PartitionPeriodDefault)
	c.PartitionsAhead = cmp.Or(c.PartitionsAhead, PartitionsAheadDefault)
	c.PartitionsAhead = max(c.PartitionsAhead, 0) // -1: the current period only
	return c
}

func (c Config) validate() error {
	if err := sqlname.Check("inbox: Config.Schema", c.Schema); err != nil {
		return err
	}
	if err := sqlname.Check("inbox: Config.Table", c.Table); err != nil {
		return err
	}
	// Derived index names must fit too, or Postgres would truncate them.
	if err := sqlname.Check("inbox: Config.Table (with suffix _processed_at_idx)", c.Table+"_processed_at_idx"); err != nil {
		return err
	}
	if strings.ContainsRune(c.Scope, 0) || !utf8.ValidString(c.Scope) {
		return fmt.Errorf("inbox: Config.Scope: %q is not valid UTF-8 text without NUL", c.Scope)
	}
	if c.PruneBatchSize < 1 {
		return fmt.Errorf("inbox: Config.PruneBatchSize: must be positive, got %d", c.PruneBatchSize)
	}
	switch c.Layout {
	case LayoutSingle:
	case LayoutPartitioned:
		// The longest names the layout derives from the table's.
		for _, suffix := range []string{"_default_processed_at_idx", partitionSuffixExample} {
			if err := sqlname.Check("inbox: Config.Table (with suffix "+suffix+")", c.Table+suffix); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("inbox: Config.Layout: %q is neither %q nor %q", c.Layout, LayoutSingle, LayoutPartitioned)
	}
	if c.PartitionPeriod < time.Minute || c.PartitionPeriod%time.Minute != 0 {
		return fmt.Errorf("inbox: Config.PartitionPeriod: %v is not a whole number of minutes", c.PartitionPeriod)
	}
	return nil
}

func (c Config) vars() map[string]string {
	return map[string]string{
		"Schema":     pgx.Identifier{c.Schema}.Sanitize(),
		"Table":      pgx.Identifier{c.Schema, c.Table}.Sanitize(),
		"PrimaryKey": pgx.Identifier{c.Table + "_pkey"}.Sanitize(),
		// The partitioned layout's primary key has a name of its own, so that
		// a claim of the other layout's SQL fails on it (ON CONFLICT ON
		// CONSTRAINT) instead of claiming under the other layout's keys.
		"TokenPrimaryKey":  pgx.Identifier{c.Table + "_token_pkey"}.Sanitize(),
		"ProcessedAtIndex": pgx.Identifier{c.Table + "_processed_at_idx"}.Sanitize(),
		// The partitioned layout's.
		"Default":                 pgx.Identifier{c.Schema, c.Table + "_default"}.Sanitize(),
		"Other":                   pgx.Identifier{c.Schema, c.Table + "_other"}.Sanitize(),
		"Floor":                   pgx.Identifier{c.Schema, c.Table + "_floor"}.Sanitize(),
		"DefaultProcessedAtIndex": pgx.Identifier{c.Table + "_default_processed_at_idx"}.Sanitize(),
		"DefaultTokenIndex":       pgx.Identifier{c.Table + "_default_token_idx"}.Sanitize(),
		"OtherProcessedAtIndex":   pgx.Identifier{c.Table + "_other_processed_at_idx"}.Sanitize(),
	}
}

//go:embed migrations/*.sql migrations_partitioned/*.sql
var migrationFS embed.FS

//go:embed sql/*.sql
var queryFS embed.FS

// Store claims tokens in one inbox table and scope.
type Store struct {
	db  exactly.DB
	cfg Config
	sql queries
	// checked is set once the table was found to have cfg.Layout; shared
	// by the copies WithScope makes.
	checked *atomic.Bool
}

// New returns a Store for the inbox table and scope that cfg names. It does
// not touch the database; call Migrate (or apply Migrations with your own
// tool) before the first claim.
func New(db exactly.DB, cfg Config) (*Store, error) {
	if db == nil {
		return nil, errors.New("inbox: New: db is nil")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var q queries
	if err := sqltmpl.Load(queryFS, "sql", cfg.vars(), &q); err != nil {
		return nil, fmt.Errorf("inbox: %w", err)
	}
	return &Store{db: db, cfg: cfg, sql: q, checked: new(atomic.Bool)}, nil
}

// Config returns the store's configuration with defaults applied.
func (s *Store) Config() Config { return s.cfg }

// WithScope returns a Store for another scope of the same table. It is cheap:
// use it per tenant or per endpoint.
func (s *Store) WithScope(scope string) *Store {
	c := *s
	c.cfg.Scope = cmp.Or(scope, ScopeDefault)
	return &c
}

// Migrations returns the versioned migrations that create the inbox table
// cfg names, for migrate.Up, migrate.Down and migrate.Status. The two
// layouts are two lines: component "inbox" and "inbox_partitioned". The
// partitioned line creates no time partition: CreatePartitions does (Migrate
// calls it), and until then every token goes to the default partition.
func Migrations(cfg Config) (migrate.Line, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return migrate.Line{}, err
	}
	if cfg.Layout == LayoutPartitioned {
		return migrate.Load(migrationFS, "migrations_partitioned", "inbox_partitioned", cfg.Schema, cfg.Table, cfg.vars())
	}
	return migrate.Load(migrationFS, "migrations", "inbox", cfg.Schema, cfg.Table, cfg.vars())
}

// Migrate applies the inbox migrations that are not yet applied, under an
// advisory lock, so it is safe to call from every process at start-up. For
// the partitioned layout it then creates the partitions of the current
// period and the PartitionsAhead next ones (CreatePartitions).
func Migrate(ctx context.Context, db exactly.DB, cfg Config) error {
	line, err := Migrations(cfg)
	if err != nil {
		return err
	}
	if err := migrate.Up(ctx, db, line); err != nil {
		return err
	}
	if cfg.withDefaults().Layout != LayoutPartitioned {
		return nil
	}
	s, err := New(db, cfg)
	if err != nil {
		return err
	}
	_, err = s.CreatePartitions(ctx)
	return err
}

// Outcome is what a claim found.
type Outcome int

const (
	// Fresh: the token was not in the inbox and is now claimed by the
	// caller's transaction. Apply the message's effects in that
	// transaction.
	Fresh Outcome = iota + 1
	// Duplicate: the token was committed before (or appears earlier in the
	// same batch). Skip the message; Stored holds the first result.
	Duplicate
	// Conflict: the token was committed before with a different payload
	// fingerprint. The producer reused a token for other content: do not
	// skip silently and do not apply.
	Conflict
	// Expired: the token is a UUIDv7 older than the partitioned layout's
	// floor (DropPartitions raised it past the token's time) and is not in
	// the inbox. Its record, if it had one, was dropped with its partition,
	// so whether it was applied before cannot be known: do not apply it. The
	// consumer dead-letters such a message. Only LayoutPartitioned reports
	// it; tokens of any other kind never expire this way.
	Expired
)

func (o Outcome) String() string {
	switch o {
	case Fresh:
		return "fresh"
	case Duplicate:
		return "duplicate"
	case Conflict:
		return "conflict"
	case Expired:
		return "expired"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Origin is where a token was first seen. The zero Origin means unknown (a
// claim that did not come from Kafka).
type Origin struct {
	Topic     string
	Partition int
	Offset    int64
}

// Request is one token to claim.
type Request struct {
	Token Token
	// Fingerprint of the payload (see Fingerprint). Nil skips the conflict
	// check for this claim.
	Fingerprint []byte
	// Origin is recorded with a fresh claim.
	Origin Origin
}

// Claimed is the result of claiming one token.
type Claimed struct {
	Outcome Outcome
	// Stored is the result stored with SetResult by the transaction that
	// first claimed the token, for a Duplicate or Conflict.
	Stored []byte
	// FirstSeen describes the first claim, for a Duplicate or Conflict.
	// ProcessedAt is when it committed; it is zero for a token repeated
	// within one batch.
	FirstSeen   Origin
	ProcessedAt time.Time
}

// Claim claims one token inside tx. See ClaimBatch.
func (s *Store) Claim(ctx context.Context, tx pgx.Tx, r Request) (Claimed, error) {
	out, err := s.ClaimBatch(ctx, tx, []Request{r})
	if err != nil {
		return Claimed{}, err
	}
	return out[0], nil
}

// ClaimBatch claims many tokens inside tx in one round trip and returns one
// Claimed per request, in order.
//
// A Fresh claim holds the token until tx ends: a concurrent claim of the
// same token waits, then sees Duplicate if tx committed or claims it itself
// if tx rolled back. The token and the caller's effects therefore commit
// together or not at all.
//
// A token repeated within reqs is Fresh at its first position and Duplicate
// (or Conflict, if fingerprints differ) after it.
//
// Under REPEATABLE READ or SERIALIZABLE, a claim that waited on a concurrent
// commit fails with a serialization failure (SQLSTATE 40001); retry the
// transaction. Under READ COMMITTED (the default) it resolves by itself.
func (s *Store) ClaimBatch(ctx context.Context, tx pgx.Tx, reqs []Request) ([]Claimed, error) {
	if strings.ContainsRune(s.cfg.Scope, 0) || !utf8.ValidString(s.cfg.Scope) {
		return nil, fmt.Errorf("inbox: scope %q is not valid UTF-8 text without NUL", s.cfg.Scope)
	}
	if len(reqs) > MaxBatch {
		return nil, fmt.Errorf("inbox: ClaimBatch: %d requests, more than %d", len(reqs), MaxBatch)
	}
	out := make([]Claimed, len(reqs))
	first := make(map[Token]int, len(reqs))
	b := batch{reqs: reqs, out: out, first: first}
	for i, r := range reqs {
		if r.Token.IsZero() {
			return nil, fmt.Errorf("inbox: ClaimBatch: request %d: %w: zero Token", i, ErrNoToken)
		}
		if j, dup := first[r.Token]; dup {
			out[i] = Claimed{Outcome: Duplicate, FirstSeen: reqs[j].Origin}
			if fingerprintsDiffer(reqs[j].Fingerprint, r.Fingerprint) {
				out[i].Outcome = Conflict
			}
			continue
		}
		first[r.Token] = i
		part, off := int32(-1), int64(-1)
		if r.Origin.Topic != "" {
			part, off = int32(r.Origin.Partition), r.Origin.Offset
		}
		b.tokens = append(b.tokens, s.key(r.Token))
		b.fps = append(b.fps, r.Fingerprint)
		b.topics = append(b.topics, r.Origin.Topic)
		b.parts = append(b.parts, part)
		b.offsets = append(b.offsets, off)
	}
	if len(b.tokens) == 0 {
		return out, nil
	}
	if err := s.checkLayout(ctx, tx); err != nil {
		return nil, err
	}
	if s.cfg.Layout == LayoutPartitioned {
		if err := s.claimPartitioned(ctx, tx, b); err != nil {
			return nil, err
		}
		return out, nil
	}
	rows, err := tx.Query(ctx, s.sql.Claim, s.cfg.Scope, b.tokens, b.fps, b.topics, b.parts, b.offsets)
	if err != nil {
		return nil, fmt.Errorf("inbox: claim: %w", err)
	}
	var unresolved [][]byte
	err = s.scanClaims(rows, func(tok Token, fresh, seen bool, row storedRow) {
		i := first[tok]
		switch {
		case fresh:
			out[i] = Claimed{Outcome: Fresh}
		case seen:
			out[i] = row.claimed(reqs[i].Fingerprint)
		default:
			unresolved = append(unresolved, s.key(tok))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("inbox: claim: %w", err)
	}
	if len(unresolved) > 0 {
		// These waited on a concurrent claim that committed after this
		// statement's snapshot was taken; a new statement sees it.
		found, err := s.lookup(ctx, tx, s.sql.Lookup, b, unresolved)
		if err != nil {
			return nil, err
		}
		if found != len(unresolved) {
			return nil, fmt.Errorf("inbox: claim: %d tokens neither inserted nor found; were they pruned concurrently?", len(unresolved)-found)
		}
	}
	return out, nil
}

// batch is one ClaimBatch call: the requests, their results, and the
// distinct tokens as the claim statement's arrays.
type batch struct {
	reqs  []Request
	out   []Claimed
	first map[Token]int // the request that claims each distinct token

	tokens  [][]byte
	fps     [][]byte
	topics  []string
	parts   []int32
	offsets []int64
}

// claimPartitioned claims b in the partitioned layout: one statement inserts
// what is new (claim_partitioned.sql) and returns only the rest, which a
// second statement reads.
func (s *Store) claimPartitioned(ctx context.Context, tx pgx.Tx, b batch) error {
	rows, err := tx.Query(ctx, s.sql.ClaimPartitioned, s.cfg.Scope, b.tokens, b.fps, b.topics, b.parts, b.offsets)
	if err != nil {
		return fmt.Errorf("inbox: claim: %w", err)
	}
	var (
		raw     []byte
		expired bool
		rest    [][]byte
		below   = map[Token]bool{}
	)
	_, err = pgx.ForEachRow(rows, []any{&raw, &expired}, func() error {
		tok, err := s.tokenOf(raw)
		if err != nil {
			return err
		}
		rest = append(rest, raw)
		below[tok] = expired
		return nil
	})
	if err != nil {
		return fmt.Errorf("inbox: claim: %w", err)
	}
	for tok, i := range b.first {
		if _, ok := below[tok]; !ok {
			b.out[i] = Claimed{Outcome: Fresh}
		}
	}
	if len(rest) == 0 {
		return nil
	}
	if _, err := s.lookup(ctx, tx, s.sql.LookupPartitioned, b, rest); err != nil {
		return err
	}
	missing := 0
	for tok, exp := range below {
		i := b.first[tok]
		switch {
		case b.out[i].Outcome != 0:
		case exp:
			b.out[i] = Claimed{Outcome: Expired}
		default:
			missing++
		}
	}
	if missing > 0 {
		return fmt.Errorf("inbox: claim: %d tokens neither inserted nor found; were they pruned concurrently?", missing)
	}
	return nil
}

// lookup reads the committed claims of keys with query and fills in their
// results; it returns how many it found.
func (s *Store) lookup(ctx context.Context, tx pgx.Tx, query string, b batch, keys [][]byte) (int, error) {
	rows, err := tx.Query(ctx, query, s.cfg.Scope, keys)
	if err != nil {
		return 0, fmt.Errorf("inbox: claim lookup: %w", err)
	}
	found := 0
	err = s.scanClaims(rows, func(tok Token, _, _ bool, row storedRow) {
		i := b.first[tok]
		b.out[i] = row.claimed(b.reqs[i].Fingerprint)
		found++
	})
	if err != nil {
		return 0, fmt.Errorf("inbox: claim lookup: %w", err)
	}
	return found, nil
}

type storedRow struct {
	fingerprint []byte
	result      []byte
	topic       *string
	partition   *int32
	offset      *int64
	processedAt *time.Time
}

func (r storedRow) claimed(fp []byte) Claimed {
	c := Claimed{Outcome: Duplicate, Stored: r.result}
	if fingerprintsDiffer(r.fingerprint, fp) {
		c.Outcome = Conflict
	}
	if r.topic != nil {
		c.FirstSeen.Topic = *r.topic
	}
	if r.partition != nil {
		c.FirstSeen.Partition = int(*r.partition)
	}
	if r.offset != nil {
		c.FirstSeen.Offset = *r.offset
	}
	if r.processedAt != nil {
		c.ProcessedAt = *r.processedAt
	}
	return c
}

// scanClaims reads rows of (token, fresh, seen, fingerprint, result, topic,
// partition, offset, processed_at).
func (s *Store) scanClaims(rows pgx.Rows, fn func(Token, bool, bool, storedRow)) error {
	var (
		raw         []byte
		fresh, seen bool
		row         storedRow
	)
	_, err := pgx.ForEachRow(rows, []any{&raw, &fresh, &seen, &row.fingerprint, &row.result, &row.topic, &row.partition, &row.offset, &row.processedAt}, func() error {
		tok, err := s.tokenOf(raw)
		if err != nil {
			return err
		}
		fn(tok, fresh, seen, row)
		return nil
	})
	return err
}

// fingerprintsDiffer is true only when both fingerprints are known.
func fingerprintsDiffer(a, b []byte) bool {
	return a != nil && b != nil && string(a) != string(b)
}

// ErrNotClaimed is returned by SetResult for a token that is not claimed in
// the store's scope.
var ErrNotClaimed = errors.New("inbox: token not claimed")

// SetResult stores result with a token claimed in tx, so that duplicates
// can return it. Call it in the same transaction as the claim.
func (s *Store) SetResult(ctx context.Context, tx pgx.Tx, t Token, result []byte) error {
	tag, err := tx.Exec(ctx, s.sql.SetResult, s.cfg.Scope, s.key(t), result)
	if err != nil {
		return fmt.Errorf("inbox: set result: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("%w: %s in scope %q", ErrNotClaimed, t, s.cfg.Scope)
	}
	return nil
}

// Prune deletes the scope's tokens claimed before before, in transactions of
// at most Config.PruneBatchSize rows, until none is left or ctx ends. It
// returns how many it deleted. It is safe while consumers run, but a message
// redelivered after its token was pruned is processed again: keep tokens
// longer than any redelivery window (see the package documentation).
// Tokens are stamped by the database's clock (processed_at DEFAULT now()),
// so derive before from the database's now() rather than the caller's clock,
// as `exactly prune` does: a client clock running ahead prunes younger tokens
// than intended.
//
// In the partitioned layout Prune deletes only the tokens that no time
// partition holds (the default and "other" partitions); DropPartitions
// retires the time partitions, for every scope at once.
func (s *Store) Prune(ctx context.Context, before time.Time) (int64, error) {
	if s.cfg.Layout != LayoutPartitioned {
		return s.prune(ctx, s.sql.Prune, before)
	}
	n, err := s.prune(ctx, s.sql.PruneDefault, before)
	if err != nil {
		return n, err
	}
	m, err := s.prune(ctx, s.sql.PruneOther, before)
	return n + m, err
}

func (s *Store) prune(ctx context.Context, query string, before time.Time) (int64, error) {
	var total int64
	for {
		tag, err := s.db.Exec(ctx, query, s.cfg.Scope, before, s.cfg.PruneBatchSize)
		if err != nil {
			return total, fmt.Errorf("inbox: prune: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(s.cfg.PruneBatchSize) {
			return total, nil
		}
	}
}

// Scopes returns the scopes that hold tokens in the store's table, in order.
func (s *Store) Scopes(ctx context.Context) ([]string, error) {
	rows, err := s.db.Query(ctx, s.sql.Scopes)
	if err != nil {
		return nil, fmt.Errorf("inbox: scopes: %w", err)
	}
	scopes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("inbox: scopes: %w", err)
	}
	return scopes, nil
}

// ScopeStats is the size and age of one scope.
type ScopeStats struct {
	Scope  string
	Tokens int64
	// Oldest is when the oldest token was claimed; zero when there is none.
	Oldest time.Time
}

// Stats counts the tokens of the store's scope. It reads every token of
// the scope: meant for operators, not hot paths.
func (s *Store) Stats(ctx context.Context) (ScopeStats, error) {
	st := ScopeStats{Scope: s.cfg.Scope}
	var oldest *time.Time
	if err := s.db.QueryRow(ctx, s.sql.ScopeStats, s.cfg.Scope).Scan(&st.Tokens, &oldest); err != nil {
		return st, fmt.Errorf("inbox: stats: %w", err)
	}
	if oldest != nil {
		st.Oldest = *oldest
	}
	return st, nil
}

// Oldest returns when the oldest token of the store's scope was claimed, or
// the zero time when the scope is empty. It probes one index entry, so it is
// cheap enough for a metrics callback: an age that grows past the retention
// means pruning stopped.
//
// In the partitioned layout the time of a UUIDv7 token stands for when it
// was claimed (its partition retires by it): Oldest is the earlier of the
// oldest UUIDv7 token's time and the oldest claim of any other token, one
// index probe per partition.
func (s *Store) Oldest(ctx context.Context) (time.Time, error) {
	var oldest *time.Time
	if s.cfg.Layout == LayoutPartitioned {
		var low []byte
		if err := s.db.QueryRow(ctx, s.sql.OldestPartitioned, s.cfg.Scope).Scan(&oldest, &low); err != nil {
			return time.Time{}, fmt.Errorf("inbox: oldest: %w", err)
		}
		if tok, err := s.tokenOf(low); err == nil {
			if t, ok := tok.Time(); ok && (oldest == nil || t.Before(*oldest)) {
				oldest = &t
			}
		}
	} else if err := s.db.QueryRow(ctx, s.sql.Oldest, s.cfg.Scope).Scan(&oldest); err != nil {
		return time.Time{}, fmt.Errorf("inbox: oldest: %w", err)
	}
	if oldest == nil {
		return time.Time{}, nil
	}
	return *oldest, nil
}

// PruneCount returns how many tokens Prune would delete: a dry run.
func (s *Store) PruneCount(ctx context.Context, before time.Time) (int64, error) {
	query := s.sql.PruneCount
	if s.cfg.Layout == LayoutPartitioned {
		query = s.sql.PruneCountPartitioned
	}
	var n int64
	if err := s.db.QueryRow(ctx, query, s.cfg.Scope, before).Scan(&n); err != nil {
		return 0, fmt.Errorf("inbox: prune count: %w", err)
	}
	return n, nil
}

// queries are the statements rendered from sql/*.sql.
type queries struct {
	Claim      string `sql:"claim"`
	Lookup     string `sql:"lookup"`
	Oldest     string `sql:"oldest"`
	Prune      string `sql:"prune"`
	PruneCount string `sql:"prune_count"`
	ScopeStats string `sql:"scope_stats"`
	Scopes     string `sql:"scopes"`
	SetResult  string `sql:"set_result"`

	// The partitioned layout's.
	ClaimPartitioned      string `sql:"claim_partitioned"`
	LookupPartitioned     string `sql:"lookup_partitioned"`
	OldestPartitioned     string `sql:"oldest_partitioned"`
	PruneDefault          string `sql:"prune_default"`
	PruneOther            string `sql:"prune_other"`
	PruneCountPartitioned string `sql:"prune_count_partitioned"`
	TableKind             string `sql:"table_kind"`
	Partitions            string `sql:"partitions"`
	MaintenanceLock       string `sql:"maintenance_lock"`
	Floor                 string `sql:"floor"`
	FloorRaise            string `sql:"floor_raise"`
	DefaultCount          string `sql:"default_count"`
	Guards                string `sql:"guards"`
	ByteaHex              string `sql:"bytea_hex"`
	DBNow                 string `sql:"db_now"`
	Detached              string `sql:"detached"`
}
