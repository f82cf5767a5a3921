package migrate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/internal/sqltmpl"
)

// lockKey is the advisory lock every migration run of this project takes,
// so concurrent runs from many processes apply each step exactly once.
const lockKey int64 = 0x6578_6163_746c_7900 // "exactly\x00"

// TrackingTable is the name of the table, in each line's schema, that
// records which migrations were applied.
const TrackingTable = "exactly_migrations"

// Migration is one versioned step, rendered for its line's schema and table.
type Migration struct {
	// Version orders the steps of a line, starting at 1.
	Version int
	// Name is the descriptive part of the file name.
	Name string
	// Up applies the step; Down reverts it.
	Up, Down string
}

// Line is the ordered migrations of one component (such as "inbox") for one
// target table. Two inbox tables in one schema are two lines.
type Line struct {
	// Component names the package the migrations belong to.
	Component string
	// Schema holds the target and the tracking table.
	Schema string
	// Target is the table the line creates; with Component it keys the
	// tracking rows.
	Target string
	// Migrations are in version order.
	Migrations []Migration
}

var fileRE = regexp.MustCompile(`^(\d{3})_([a-z0-9_]+)\.(up|down)\.sql$`)

// Load reads NNN_name.up.sql and NNN_name.down.sql files from directory
// dir of fsys and renders them as text/template templates with vars. Every
// value in vars must already be a quoted identifier (pgx.Identifier.Sanitize):
// templates never see raw user input.
func Load(fsys fs.FS, dir, component, schema, target string, vars map[string]string) (Line, error) {
	fsys, err := fs.Sub(fsys, dir)
	if err != nil {
		return Line{}, fmt.Errorf("migrate: %s migrations: %w", component, err)
	}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return Line{}, fmt.Errorf("migrate: read %s migrations: %w", component, err)
	}
	byVersion := map[int]*Migration{}
	for _, e := range entries {
		m := fileRE.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		v, _ := strconv.Atoi(m[1])
		raw, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return Line{}, fmt.Errorf("migrate: read %s: %w", e.Name(), err)
		}
		sql, err := sqltmpl.Render(e.Name(), string(raw), vars)
		if err != nil {
			return Line{}, fmt.Errorf("migrate: %w", err)
		}
		mig := byVersion[v]
		if mig == nil {
			mig = &Migration{Version: v, Name: m[2]}
			byVersion[v] = mig
		}
		if m[3] == "up" {
			mig.Up = sql
		} else {
			mig.Down = sql
		}
	}
	line := Line{Component: component, Schema: schema, Target: target}
	for _, m := range byVersion {
		if m.Up == "" || m.Down == "" {
			return Line{}, fmt.Errorf("migrate: %s migration %03d_%s needs both an up and a down file", component, m.Version, m.Name)
		}
		line.Migrations = append(line.Migrations, *m)
	}
	sort.Slice(line.Migrations, func(i, j int) bool { return line.Migrations[i].Version < line.Migrations[j].Version })
	for i, m := range line.Migrations {
		if m.Version != i+1 {
			return Line{}, fmt.Errorf("migrate: %s migrations are not numbered 1..n: found %03d at position %d", component, m.Version, i+1)
		}
	}
	return line, nil
}

// SQL returns the up migrations of the line as one script, for teams that
// apply migrations with their own tool. The script does not write the
// tracking table.
func (l Line) SQL() string {
	var buf bytes.Buffer
	for _, m := range l.Migrations {
		fmt.Fprintf(&buf, "-- %s %03d_%s (schema %s, table %s)\n%s\n", l.Component, m.Version, m.Name, l.Schema, l.Target, m.Up)
	}
	return buf.String()
}

// Up applies every migration of every line that is not yet applied, all in
// one transaction under a cluster-wide advisory lock: concurrent and repeated
// calls are safe, and a failure leaves nothing half applied.
func Up(ctx context.Context, db exactly.DB, lines ...Line) error {
	return locked(ctx, db, func(tx pgx.Tx) error {
		for _, l := range lines {
			applied, err := appliedVersions(ctx, tx, l)
			if err != nil {
				return err
			}
			for _, m := range l.Migrations {
				if applied[m.Version] {
					continue
				}
				if _, err := tx.Exec(ctx, m.Up); err != nil {
					return fmt.Errorf("migrate: apply %s %03d_%s to %s.%s: %w", l.Component, m.Version, m.Name, l.Schema, l.Target, err)
				}
				if _, err := tx.Exec(ctx, insertApplied(l), l.Component, l.Target, m.Version, m.Name); err != nil {
					return fmt.Errorf("migrate: record %s %03d: %w", l.Component, m.Version, err)
				}
			}
		}
		return nil
	})
}

// Down reverts the most recently applied migration of the line, one step,
// and returns it. It returns ErrNothingApplied when none is applied.
func Down(ctx context.Context, db exactly.DB, l Line) (Migration, error) {
	var reverted Migration
	err := locked(ctx, db, func(tx pgx.Tx) error {
		applied, err := appliedVersions(ctx, tx, l)
		if err != nil {
			return err
		}
		for i := len(l.Migrations) - 1; i >= 0; i-- {
			m := l.Migrations[i]
			if !applied[m.Version] {
				continue
			}
			if _, err := tx.Exec(ctx, m.Down); err != nil {
				return fmt.Errorf("migrate: revert %s %03d_%s: %w", l.Component, m.Version, m.Name, err)
			}
			if _, err := tx.Exec(ctx, deleteApplied(l), l.Component, l.Target, m.Version); err != nil {
				return fmt.Errorf("migrate: unrecord %s %03d: %w", l.Component, m.Version, err)
			}
			reverted = m
			return nil
		}
		return ErrNothingApplied
	})
	return reverted, err
}

// Forget deletes the tracking rows of the line, under the same lock as Up,
// without running any Down migration: for a target table that was replaced
// by another line's (the inbox converted to another layout), whose old steps
// must no longer count as applied.
func Forget(ctx context.Context, db exactly.DB, l Line) error {
	return locked(ctx, db, func(tx pgx.Tx) error {
		if err := ensureTracking(ctx, tx, l); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM "+tracking(l)+" WHERE component = $1 AND target = $2", l.Component, l.Target); err != nil {
			return fmt.Errorf("migrate: forget %s %s: %w", l.Component, l.Target, err)
		}
		return nil
	})
}

// ErrNothingApplied is returned by Down when the line has no applied
// migration to revert.
var ErrNothingApplied = errors.New("migrate: no applied migration to revert")

// State is whether one migration of a line is applied.
type State struct {
	Component string
	Target    string
	Version   int
	Name      string
	// AppliedAt is zero when the migration is pending.
	AppliedAt time.Time
}

// Status lists every migration of the lines with the time it was applied.
func Status(ctx context.Context, db exactly.DB, lines ...Line) ([]State, error) {
	var out []State
	err := locked(ctx, db, func(tx pgx.Tx) error {
		for _, l := range lines {
			times, err := appliedTimes(ctx, tx, l, false)
			if err != nil {
				return err
			}
			for _, m := range l.Migrations {
				out = append(out, State{Component: l.Component, Target: l.Target, Version: m.Version, Name: m.Name, AppliedAt: times[m.Version]})
			}
		}
		return nil
	})
	return out, err
}

func locked(ctx context.Context, db exactly.DB, fn func(pgx.Tx) error) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate: begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey); err != nil {
		return fmt.Errorf("migrate: take advisory lock: %w", err)
	}
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	return nil
}

func tracking(l Line) string { return pgx.Identifier{l.Schema, TrackingTable}.Sanitize() }

func insertApplied(l Line) string {
	return "INSERT INTO " + tracking(l) + " (component, target, version, name) VALUES ($1, $2, $3, $4)"
}

func deleteApplied(l Line) string {
	return "DELETE FROM " + tracking(l) + " WHERE component = $1 AND target = $2 AND version = $3"
}

func ensureTracking(ctx context.Context, tx pgx.Tx, l Line) error {
	_, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{l.Schema}.Sanitize()+
		";\nCREATE TABLE IF NOT EXISTS "+tracking(l)+` (
	component  text NOT NULL,
	target     text NOT NULL,
	version    integer NOT NULL,
	name       text NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (component, target, version)
)`)
	if err != nil {
		return fmt.Errorf("migrate: create %s: %w", tracking(l), err)
	}
	return nil
}

// appliedTimes reads the tracking rows of l. With create it first creates
// the schema and tracking table; without, a missing table means nothing is
// applied, so read-only callers never write.
func appliedTimes(ctx context.Context, tx pgx.Tx, l Line, create bool) (map[int]time.Time, error) {
	if create {
		if err := ensureTracking(ctx, tx, l); err != nil {
			return nil, err
		}
	} else {
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", tracking(l)).Scan(&exists); err != nil {
			return nil, fmt.Errorf("migrate: look for %s: %w", tracking(l), err)
		}
		if !exists {
			return map[int]time.Time{}, nil
		}
	}
	rows, err := tx.Query(ctx, "SELECT version, applied_at FROM "+tracking(l)+" WHERE component = $1 AND target = $2", l.Component, l.Target)
	if err != nil {
		return nil, fmt.Errorf("migrate: read %s: %w", tracking(l), err)
	}
	out := map[int]time.Time{}
	var v int
	var at time.Time
	_, err = pgx.ForEachRow(rows, []any{&v, &at}, func() error { out[v] = at; return nil })
	if err != nil {
		return nil, fmt.Errorf("migrate: read %s: %w", tracking(l), err)
	}
	return out, nil
}

func appliedVersions(ctx context.Context, tx pgx.Tx, l Line) (map[int]bool, error) {
	times, err := appliedTimes(ctx, tx, l, true)
	if err != nil {
		return nil, err
	}
	out := make(map[int]bool, len(times))
	for v := range times {
		out[v] = true
	}
	return out, nil
}
