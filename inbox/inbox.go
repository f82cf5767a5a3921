package inbox

import (
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"strings"
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
	SchemaDefault         = "exactly"
	TableDefault          = "inbox"
	ScopeDefault          = "default"
	PruneBatchSizeDefault = 1000
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
}

func (c Config) withDefaults() Config {
	c.Schema = cmp.Or(c.Schema, SchemaDefault)
	c.Table = cmp.Or(c.Table, TableDefault)
	c.Scope = cmp.Or(c.Scope, ScopeDefault)
	c.PruneBatchSize = cmp.Or(c.PruneBatchSize, PruneBatchSizeDefault)
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
	return nil
}

func (c Config) vars() map[string]string {
	return map[string]string{
		"Schema":           pgx.Identifier{c.Schema}.Sanitize(),
		"Table":            pgx.Identifier{c.Schema, c.Table}.Sanitize(),
		"PrimaryKey":       pgx.Identifier{c.Table + "_pkey"}.Sanitize(),
		"ProcessedAtIndex": pgx.Identifier{c.Table + "_processed_at_idx"}.Sanitize(),
	}
}

//go:embed migrations/*.sql
var migrationFS embed.FS

//go:embed sql/*.sql
var queryFS embed.FS

// Store claims tokens in one inbox table and scope.
type Store struct {
	db  exactly.DB
	cfg Config
	sql queries
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
	return &Store{db: db, cfg: cfg, sql: q}, nil
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
// cfg names, for migrate.Up, migrate.Down and migrate.Status.
func Migrations(cfg Config) (migrate.Line, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return migrate.Line{}, err
	}
	return migrate.Load(migrationFS, "migrations", "inbox", cfg.Schema, cfg.Table, cfg.vars())
}

// Migrate applies the inbox migrations that are not yet applied, under an
// advisory lock, so it is safe to call from every process at start-up.
func Migrate(ctx context.Context, db exactly.DB, cfg Config) error {
	line, err := Migrations(cfg)
	if err != nil {
		return err
	}
	return migrate.Up(ctx, db, line)
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
)

func (o Outcome) String() string {
	switch o {
	case Fresh:
		return "fresh"
	case Duplicate:
		return "duplicate"
	case Conflict:
		return "conflict"
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
	n := 0
	tokens := make([][]byte, 0, len(reqs))
	fps := make([][]byte, 0, len(reqs))
	topics := make([]string, 0, len(reqs))
	parts := make([]int32, 0, len(reqs))
	offsets := make([]int64, 0, len(reqs))
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
		n++
		part, off := int32(-1), int64(-1)
		if r.Origin.Topic != "" {
			part, off = int32(r.Origin.Partition), r.Origin.Offset
		}
		tokens = append(tokens, r.Token.stored())
		fps = append(fps, r.Fingerprint)
		topics = append(topics, r.Origin.Topic)
		parts = append(parts, part)
		offsets = append(offsets, off)
	}
	if n == 0 {
		return out, nil
	}
	rows, err := tx.Query(ctx, s.sql.Claim, s.cfg.Scope, tokens, fps, topics, parts, offsets)
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
			unresolved = append(unresolved, tok.stored())
		}
	})
	if err != nil {
		return nil, fmt.Errorf("inbox: claim: %w", err)
	}
	if len(unresolved) > 0 {
		// These waited on a concurrent claim that committed after this
		// statement's snapshot was taken; a new statement sees it.
		rows, err := tx.Query(ctx, s.sql.Lookup, s.cfg.Scope, unresolved)
		if err != nil {
			return nil, fmt.Errorf("inbox: claim lookup: %w", err)
		}
		found := 0
		err = s.scanClaims(rows, func(tok Token, _, _ bool, row storedRow) {
			i := first[tok]
			out[i] = row.claimed(reqs[i].Fingerprint)
			found++
		})
		if err != nil {
			return nil, fmt.Errorf("inbox: claim lookup: %w", err)
		}
		if found != len(unresolved) {
			return nil, fmt.Errorf("inbox: claim: %d tokens neither inserted nor found; were they pruned concurrently?", len(unresolved)-found)
		}
	}
	return out, nil
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
		tok, err := tokenFromStored(raw)
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
	tag, err := tx.Exec(ctx, s.sql.SetResult, s.cfg.Scope, t.stored(), result)
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
func (s *Store) Prune(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for {
		tag, err := s.db.Exec(ctx, s.sql.Prune, s.cfg.Scope, before, s.cfg.PruneBatchSize)
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
func (s *Store) Oldest(ctx context.Context) (time.Time, error) {
	var oldest *time.Time
	if err := s.db.QueryRow(ctx, s.sql.Oldest, s.cfg.Scope).Scan(&oldest); err != nil {
		return time.Time{}, fmt.Errorf("inbox: oldest: %w", err)
	}
	if oldest == nil {
		return time.Time{}, nil
	}
	return *oldest, nil
}

// PruneCount returns how many tokens Prune would delete: a dry run.
func (s *Store) PruneCount(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	if err := s.db.QueryRow(ctx, s.sql.PruneCount, s.cfg.Scope, before).Scan(&n); err != nil {
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
}
