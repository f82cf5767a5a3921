package inbox

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/exactlyhq/exactly/internal/sqltmpl"
)

// PartitionMoveLimit is the most tokens CreatePartitions moves from the
// default partition into a partition it creates. Moving holds the table's
// lock while Postgres scans the default partition; a range with more tokens
// there (maintenance stopped for longer than PartitionsAhead periods) is left
// to the default partition, where Prune retires it row by row, and the next
// ranges get their partitions.
const PartitionMoveLimit = 10000

// MaintenanceLockTimeout bounds how long CreatePartitions and DropPartitions
// wait for a lock on the inbox table. The wait is behind claims in flight,
// and claims that arrive meanwhile queue behind it, so it is kept short: a
// step that times out fails and is tried again by the next run.
const MaintenanceLockTimeout = 2 * time.Second

//go:embed ddl/*.sql
var ddlFS embed.FS

// PartitionChanges is what CreatePartitions or DropPartitions did.
type PartitionChanges struct {
	// Created and Dropped are time partitions, oldest first.
	Created, Dropped []Partition
	// Moved counts the tokens moved from the default partition into the
	// partitions created.
	Moved int64
	// Skipped are ranges left without a partition because the default
	// partition holds more than PartitionMoveLimit of their tokens.
	Skipped []Partition
	// Busy is true when another process was maintaining the table's
	// partitions, so this call did nothing (or stopped early).
	Busy bool
}

// CreatePartitions creates the time partitions of the current period and of
// the Config.PartitionsAhead next ones that do not exist yet, by the
// database's clock. It is safe to call from many processes at once (the
// consumer calls it in the background, `exactly prune` and Migrate too):
// one of them does the work, under a transaction-scoped advisory lock, and
// the others return with Busy set.
//
// Tokens claimed while their partition did not exist are in the default
// partition. Creating a partition moves them into it, under the table's
// lock, when there are at most PartitionMoveLimit of them; otherwise the
// range is skipped and stays in the default partition. A partition whose
// range has no token in the default partition is created without scanning
// it under the lock: a NOT VALID check constraint first keeps new tokens of
// the range out of the default partition, then validating it proves there
// are none, without blocking claims (see ddl/).
func (s *Store) CreatePartitions(ctx context.Context) (PartitionChanges, error) {
	return s.createPartitions(ctx, time.Time{})
}

// createPartitions is CreatePartitions at time at, or at the database's
// clock when at is zero.
func (s *Store) createPartitions(ctx context.Context, at time.Time) (PartitionChanges, error) {
	var ch PartitionChanges
	if s.cfg.Layout != LayoutPartitioned {
		return ch, s.errNotPartitioned("CreatePartitions")
	}
	var todo []timeRange
	busy, err := s.maintain(ctx, func(tx pgx.Tx, now time.Time) error {
		if !at.IsZero() {
			now = at
		}
		existing, err := s.ranges(ctx, tx)
		if err != nil {
			return err
		}
		period := s.cfg.PartitionPeriod.Milliseconds()
		todo = uncovered(existing, alignDown(now.UnixMilli(), period), period, s.cfg.PartitionsAhead+1)
		return nil
	})
	if err != nil || busy {
		ch.Busy = busy
		return ch, err
	}
	for _, r := range todo {
		if err := s.createPartition(ctx, r, &ch); err != nil || ch.Busy {
			return ch, err
		}
	}
	return ch, s.dropGuards(ctx, &ch)
}

// createPartition creates the partition of r, by the cheapest way the rows
// of the default partition allow.
func (s *Store) createPartition(ctx context.Context, r timeRange, ch *PartitionChanges) error {
	p := r.partition(s.cfg.Table)
	var inDefault int64
	stop, err := s.step(ctx, r, ch, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, s.sql.DefaultCount, boundKey(r.from), boundKey(r.to)).Scan(&inDefault); err != nil {
			return err
		}
		if inDefault > 0 {
			return nil
		}
		guarded, err := s.guarded(ctx, tx, p.Name)
		if err != nil || guarded {
			return err
		}
		return s.execDDL(ctx, tx, "guard", r)
	})
	if err != nil || stop {
		return err
	}
	if inDefault == 0 {
		stop, err = s.step(ctx, r, ch, func(tx pgx.Tx) error { return s.execDDL(ctx, tx, "validate", r) })
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr) && pgErr.Code == "23514": // check_violation: tokens came in before the guard
			inDefault = 1
		case err != nil || stop:
			return err
		default:
			stop, err = s.step(ctx, r, ch, func(tx pgx.Tx) error { return s.execDDL(ctx, tx, "create", r) })
			if err == nil && !stop {
				ch.Created = append(ch.Created, p)
			}
			return err
		}
	}
	// Move the default partition's tokens of r, under the table's lock.
	_, err = s.step(ctx, r, ch, func(tx pgx.Tx) error {
		if err := s.execDDL(ctx, tx, "lock", r); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, s.sql.DefaultCount, boundKey(r.from), boundKey(r.to)).Scan(&inDefault); err != nil {
			return err
		}
		if inDefault > PartitionMoveLimit {
			ch.Skipped = append(ch.Skipped, p)
			return s.execDDL(ctx, tx, "unguard", r)
		}
		if err := s.execDDL(ctx, tx, "move", r); err != nil {
			return err
		}
		ch.Created = append(ch.Created, p)
		ch.Moved += inDefault
		return nil
	})
	return err
}

// step runs fn under the maintenance lock unless another process holds it
// (stop, with ch.Busy set) or r got a partition meanwhile (stop).
func (s *Store) step(ctx context.Context, r timeRange, ch *PartitionChanges, fn func(pgx.Tx) error) (stop bool, err error) {
	busy, err := s.maintain(ctx, func(tx pgx.Tx, _ time.Time) error {
		existing, err := s.ranges(ctx, tx)
		if err != nil {
			return err
		}
		if overlapsAny(existing, r) {
			stop = true
			return nil
		}
		return fn(tx)
	})
	if busy {
		ch.Busy = true
	}
	return stop || busy, err
}

// dropGuards removes guard constraints left on the default partition by a
// run that stopped between adding one and creating its partition: each
// refuses the default partition the tokens of its range.
func (s *Store) dropGuards(ctx context.Context, ch *PartitionChanges) error {
	busy, err := s.maintain(ctx, func(tx pgx.Tx, _ time.Time) error {
		rows, err := tx.Query(ctx, s.sql.Guards, pgx.Identifier{s.cfg.Schema, s.cfg.Table + "_default"}.Sanitize(), s.cfg.Table+"_p")
		if err != nil {
			return err
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, name := range names {
			stmt, err := s.renderDDL("unguard", map[string]string{"Guard": pgx.Identifier{name}.Sanitize()})
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
	ch.Busy = ch.Busy || busy
	if err != nil {
		return fmt.Errorf("inbox: drop leftover guards: %w", err)
	}
	return nil
}

// guarded reports whether the default partition has the guard constraint
// of the partition named name.
func (s *Store) guarded(ctx context.Context, tx pgx.Tx, name string) (bool, error) {
	rows, err := tx.Query(ctx, s.sql.Guards, pgx.Identifier{s.cfg.Schema, s.cfg.Table + "_default"}.Sanitize(), name)
	if err != nil {
		return false, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return len(names) > 0, err
}

// DropPartitions retires the time partitions whose tokens are all older
// than before (their upper bound is at or before it): in one transaction
// under the table's lock it raises the floor to the highest bound it drops
// and detaches each partition, which takes milliseconds; a second
// transaction, which claims do not wait for, drops them (unlinking a
// partition's files is most of the work). From the first commit on, a token
// below the floor that is not in the inbox is reported Expired instead of
// claimed, so a message whose record was dropped is never applied a second
// time. Derive before from the database's clock, as `exactly prune` does.
// Like CreatePartitions it is safe to call from many processes at once; a
// table left detached by a run that stopped between the two transactions is
// dropped by the next.
//
// Tokens in the default and "other" partitions are retired by Prune.
func (s *Store) DropPartitions(ctx context.Context, before time.Time) (PartitionChanges, error) {
	var ch PartitionChanges
	if s.cfg.Layout != LayoutPartitioned {
		return ch, s.errNotPartitioned("DropPartitions")
	}
	var detached []timeRange
	busy, err := s.maintain(ctx, func(tx pgx.Tx, _ time.Time) error {
		existing, err := s.ranges(ctx, tx)
		if err != nil {
			return err
		}
		var victims []timeRange
		for _, r := range existing {
			if r.to <= before.UnixMilli() {
				victims = append(victims, r)
			}
		}
		if len(victims) == 0 {
			return nil
		}
		if err := s.execDDL(ctx, tx, "lock", victims[0]); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, s.sql.FloorRaise, boundKey(victims[len(victims)-1].to)); err != nil {
			return err
		}
		for _, r := range victims {
			if err := s.execDDL(ctx, tx, "drop", r); err != nil {
				return err
			}
		}
		detached = victims
		return nil
	})
	ch.Busy = busy
	if err != nil {
		return ch, fmt.Errorf("inbox: drop partitions: %w", err)
	}
	for _, r := range detached {
		ch.Dropped = append(ch.Dropped, r.partition(s.cfg.Table))
	}
	if busy {
		return ch, nil
	}
	// The files, without the table's lock; also what an earlier run left.
	_, err = s.maintain(ctx, func(tx pgx.Tx, _ time.Time) error {
		rows, err := tx.Query(ctx, s.sql.Detached, s.cfg.Schema, s.cfg.Table+"_p")
		if err != nil {
			return err
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, name := range names {
			if !isPartitionName(s.cfg.Table, name) {
				continue
			}
			stmt, err := s.renderDDL("drop_detached", map[string]string{"Partition": pgx.Identifier{s.cfg.Schema, name}.Sanitize()})
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return ch, fmt.Errorf("inbox: drop detached partitions (their tokens are retired already; the next run drops them): %w", err)
	}
	return ch, nil
}

// isPartitionName reports whether name is the name of a time partition of
// table, {table}_pYYYYMMDD_HHMM.
func isPartitionName(table, name string) bool {
	stamp, ok := strings.CutPrefix(name, table+"_p")
	if !ok {
		return false
	}
	_, err := time.Parse(partitionNameLayout, stamp)
	return err == nil && len(stamp) == len(partitionNameLayout)
}

// maintain runs fn in a transaction that holds the table's maintenance lock,
// with lock_timeout MaintenanceLockTimeout and the database's now(). It does
// not run fn, and returns busy, when another transaction holds the lock.
func (s *Store) maintain(ctx context.Context, fn func(tx pgx.Tx, now time.Time) error) (busy bool, err error) {
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var locked bool
		var now time.Time
		timeout := strconv.FormatInt(MaintenanceLockTimeout.Milliseconds(), 10) + "ms"
		if err := tx.QueryRow(ctx, s.sql.MaintenanceLock, s.table(), timeout).Scan(&locked, &now); err != nil {
			return err
		}
		if !locked {
			busy = true
			return nil
		}
		return fn(tx, now)
	})
	if err != nil {
		return busy, fmt.Errorf("inbox: partition maintenance: %w", err)
	}
	return busy, nil
}

// execDDL runs the DDL template ddl/name.sql for the partition of r.
func (s *Store) execDDL(ctx context.Context, tx pgx.Tx, name string, r timeRange) error {
	p := r.partition(s.cfg.Table)
	stmt, err := s.renderDDL(name, map[string]string{
		"Partition": pgx.Identifier{s.cfg.Schema, p.Name}.Sanitize(),
		"Guard":     pgx.Identifier{p.Name}.Sanitize(),
		"From":      boundLiteral(r.from),
		"To":        boundLiteral(r.to),
	})
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("%s %s: %w", name, p.Name, err)
	}
	return nil
}

// renderDDL renders ddl/name.sql with the table's names and extra, whose
// values are quoted identifiers or literals built from integers.
func (s *Store) renderDDL(name string, extra map[string]string) (string, error) {
	raw, err := ddlFS.ReadFile("ddl/" + name + ".sql")
	if err != nil {
		return "", err
	}
	vars := s.cfg.vars()
	for k, v := range extra {
		vars[k] = v
	}
	return sqltmpl.Render(name+".sql", string(raw), vars)
}

// alignDown is the start of the period that holds ms, periods counted from
// the Unix epoch.
func alignDown(ms, period int64) int64 {
	r := ms % period
	if r < 0 {
		r += period
	}
	return ms - r
}

// uncovered splits the n periods from start into the ranges no existing
// partition holds. existing is sorted.
func uncovered(existing []timeRange, start, period int64, n int) []timeRange {
	var out []timeRange
	for k := range n {
		lo, hi := start+int64(k)*period, start+int64(k+1)*period
		cur := lo
		for _, e := range existing {
			if e.to <= cur || e.from >= hi {
				continue
			}
			if e.from > cur {
				out = append(out, timeRange{cur, e.from})
			}
			cur = max(cur, e.to)
			if cur >= hi {
				break
			}
		}
		if cur < hi {
			out = append(out, timeRange{cur, hi})
		}
	}
	return out
}

func overlapsAny(existing []timeRange, r timeRange) bool {
	for _, e := range existing {
		if e.from < r.to && r.from < e.to {
			return true
		}
	}
	return false
}
