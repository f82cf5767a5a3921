package inbox

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/exactlyhq/exactly"
)

// Layout is how an inbox table is organised on disk. It is chosen when the
// table is created and cannot change in place (docs/runbook.md describes
// switching an inbox to the other layout).
type Layout string

const (
	// LayoutSingle is one table with a (scope, processed_at) index; Prune
	// deletes expired tokens in bounded batches. Retiring a day of tokens
	// costs as much write work, WAL and vacuum as claiming them did.
	LayoutSingle Layout = "single"
	// LayoutPartitioned range-partitions the table on the token itself.
	// A UUIDv7 token's first 48 bits are its time, so the primary key
	// (scope, token), which includes the partition key, still rejects a
	// token wherever it was claimed, and DropPartitions retires a whole
	// period with one DROP. Tokens that carry no time (text, digests, other
	// UUID versions) live in one more partition pruned like LayoutSingle.
	// See the package documentation, "Retention".
	LayoutPartitioned Layout = "partitioned"
)

// partitionSuffixExample is the longest name suffix of a time partition.
const partitionSuffixExample = "_p20060102_1504"

// partitionNameLayout formats a partition's lower bound into its name.
const partitionNameLayout = "20060102_1504"

// ErrLayout reports a Store whose Config.Layout is not the layout of its
// table, which would store and look up tokens under different keys.
var ErrLayout = errors.New("inbox: table layout does not match Config.Layout")

// key is the stored form of t in the store's table. The partitioned layout
// keeps kind 0 for UUIDv7 tokens, whose bytes order them by time, and files
// other UUIDs under a kind of their own.
func (s *Store) key(t Token) []byte {
	k := t.stored()
	if s.cfg.Layout == LayoutPartitioned && k[0] == kindUUID && !t.isUUIDv7() {
		k[0] = kindUUIDNotV7
	}
	return k
}

// tokenOf is the Token whose key is k.
func (s *Store) tokenOf(k []byte) (Token, error) {
	if s.cfg.Layout == LayoutPartitioned && len(k) == 17 && k[0] == kindUUIDNotV7 {
		u := make([]byte, 17)
		copy(u[1:], k[1:])
		k = u // kindUUID
	}
	return tokenFromStored(k)
}

// checkLayout fails with ErrLayout, once per Store, unless the table has
// the layout of the store's configuration. A Store of the wrong layout would
// miss tokens of UUIDs that are not version 7: they are keyed differently.
func (s *Store) checkLayout(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) error {
	if s.checked.Load() {
		return nil
	}
	var kind *string
	if err := q.QueryRow(ctx, s.sql.TableKind, s.table()).Scan(&kind); err != nil {
		return fmt.Errorf("inbox: check table layout: %w", err)
	}
	switch {
	case kind == nil:
		return fmt.Errorf("inbox: table %s does not exist; run inbox.Migrate or `exactly migrate up`", s.table())
	case *kind == "p" && s.cfg.Layout != LayoutPartitioned:
		return fmt.Errorf("%w: %s is partitioned, Config.Layout is %q", ErrLayout, s.table(), s.cfg.Layout)
	case *kind != "p" && s.cfg.Layout == LayoutPartitioned:
		return fmt.Errorf("%w: %s is a single table, Config.Layout is %q", ErrLayout, s.table(), s.cfg.Layout)
	}
	s.checked.Store(true)
	return nil
}

// DetectLayout returns the layout of the inbox table cfg names, as it is in
// the database: for tools that operate on a table they did not create.
func DetectLayout(ctx context.Context, db exactly.DB, cfg Config) (Layout, error) {
	s, err := New(db, cfg)
	if err != nil {
		return "", err
	}
	var kind *string
	if err := db.QueryRow(ctx, s.sql.TableKind, s.table()).Scan(&kind); err != nil {
		return "", fmt.Errorf("inbox: detect layout: %w", err)
	}
	switch {
	case kind == nil:
		return "", fmt.Errorf("inbox: table %s does not exist", s.table())
	case *kind == "p":
		return LayoutPartitioned, nil
	}
	return LayoutSingle, nil
}

// table is the quoted name of the store's table.
func (s *Store) table() string { return pgx.Identifier{s.cfg.Schema, s.cfg.Table}.Sanitize() }

// Partition is one time partition of a partitioned inbox: it holds the
// UUIDv7 tokens whose time is in [From, To).
type Partition struct {
	Name     string
	From, To time.Time
}

// timeRange is a partition's bounds in Unix milliseconds, [from, to).
type timeRange struct{ from, to int64 }

func (r timeRange) partition(table string) Partition {
	return Partition{Name: partitionName(table, r.from), From: time.UnixMilli(r.from).UTC(), To: time.UnixMilli(r.to).UTC()}
}

func partitionName(table string, from int64) string {
	return table + "_p" + time.UnixMilli(from).UTC().Format(partitionNameLayout)
}

// boundKey is the smallest stored UUIDv7 token of millisecond ms.
func boundKey(ms int64) []byte {
	return []byte{kindUUID, byte(ms >> 40), byte(ms >> 32), byte(ms >> 24), byte(ms >> 16), byte(ms >> 8), byte(ms)}
}

// boundLiteral is boundKey(ms) as an SQL literal, for DDL, which takes no
// parameters. It is built from an integer, never from input.
func boundLiteral(ms int64) string { return `'\x` + hex.EncodeToString(boundKey(ms)) + `'` }

// boundRE matches the bounds of a time partition as pg_get_expr prints them
// with bytea_output = 'hex'.
var boundRE = regexp.MustCompile(`^FOR VALUES FROM \('\\x00([0-9a-f]{12})'\) TO \('\\x00([0-9a-f]{12})'\)$`)

// parseBound reads a time partition's bounds; ok is false for any other
// partition (the default and "other" ones, or one an operator attached).
func parseBound(expr string) (r timeRange, ok bool) {
	m := boundRE.FindStringSubmatch(expr)
	if m == nil {
		return r, false
	}
	from, err1 := hex.DecodeString(m[1])
	to, err2 := hex.DecodeString(m[2])
	if err1 != nil || err2 != nil {
		return r, false
	}
	return timeRange{uuidMillis(string(from)), uuidMillis(string(to))}, true
}

// errNotPartitioned is returned by the partition methods of a Store of
// LayoutSingle.
func (s *Store) errNotPartitioned(op string) error {
	return fmt.Errorf("inbox: %s: Config.Layout is %q; partitions belong to %q", op, s.cfg.Layout, LayoutPartitioned)
}

// Partitions lists the time partitions of the store's table, oldest first.
func (s *Store) Partitions(ctx context.Context) ([]Partition, error) {
	if s.cfg.Layout != LayoutPartitioned {
		return nil, s.errNotPartitioned("Partitions")
	}
	var out []Partition
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, s.sql.ByteaHex); err != nil {
			return err
		}
		ranges, err := s.ranges(ctx, tx)
		for _, r := range ranges {
			out = append(out, r.partition(s.cfg.Table))
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("inbox: partitions: %w", err)
	}
	return out, nil
}

// ranges reads the time partitions' bounds, sorted, in tx, whose
// bytea_output must be hex.
func (s *Store) ranges(ctx context.Context, tx pgx.Tx) ([]timeRange, error) {
	rows, err := tx.Query(ctx, s.sql.Partitions, s.table())
	if err != nil {
		return nil, err
	}
	var (
		name, bound string
		out         []timeRange
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &bound}, func() error {
		if r, ok := parseBound(bound); ok {
			out = append(out, r)
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].from < out[j].from })
	return out, err
}

// Floor returns the time below which UUIDv7 tokens are no longer claimed
// fresh (see Expired): the upper bound of the last partition DropPartitions
// dropped, or the zero time when it dropped none.
func (s *Store) Floor(ctx context.Context) (time.Time, error) {
	if s.cfg.Layout != LayoutPartitioned {
		return time.Time{}, s.errNotPartitioned("Floor")
	}
	var k []byte
	if err := s.db.QueryRow(ctx, s.sql.Floor).Scan(&k); err != nil {
		return time.Time{}, fmt.Errorf("inbox: floor: %w", err)
	}
	if len(k) < 7 {
		return time.Time{}, nil
	}
	return time.UnixMilli(uuidMillis(string(k[1:7]))).UTC(), nil
}
