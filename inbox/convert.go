package inbox

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/migrate"
)

// Conversion is what ConvertToPartitioned did.
type Conversion struct {
	// Copied counts the tokens copied into the partitioned table.
	Copied int64
	// Created are the time partitions created for them and for the coming
	// periods.
	Created []Partition
	// Old is the single table, renamed {table}_single and no longer used;
	// drop it once the partitioned inbox is in service.
	Old string
}

// ConvertToPartitioned turns the single-table inbox that cfg names
// (cfg.Layout is ignored) into a partitioned one, in one transaction: it
// locks the table (claims wait for the conversion), renames it
// {table}_single, creates the partitioned table in its place (the
// inbox_partitioned migrations, recorded as applied; the single table's are
// forgotten), creates time partitions from the period of the oldest claim to
// Config.PartitionsAhead periods ahead, and copies every token. Nothing is
// lost or doubled: the copy is the same transaction as the rename, and
// claims that waited then fail, whether their Store is of the single layout
// (its claim names the single table's primary key) or was started against
// the partitioned one (it checks the layout), until the processes run with
// Config.Layout LayoutPartitioned.
//
// Claims stop for as long as the copy takes (docs/benchmarks.md); see
// docs/runbook.md for the procedure.
func ConvertToPartitioned(ctx context.Context, db exactly.DB, cfg Config) (Conversion, error) {
	cfg.Layout = LayoutPartitioned
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return Conversion{}, err
	}
	single := cfg
	single.Layout = LayoutSingle
	var conv Conversion
	oldName := cfg.Table + "_single"
	conv.Old = pgx.Identifier{cfg.Schema, oldName}.Sanitize()
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		s, err := New(tx, cfg)
		if err != nil {
			return err
		}
		var kind *string
		if err := tx.QueryRow(ctx, s.sql.TableKind, s.table()).Scan(&kind); err != nil {
			return err
		}
		if kind == nil || *kind != "r" {
			return fmt.Errorf("inbox: convert: %s is not a single-table inbox", s.table())
		}
		extra := map[string]string{"OldName": pgx.Identifier{oldName}.Sanitize(), "Old": conv.Old}
		if err := s.execTemplate(ctx, tx, "convert", extra); err != nil {
			return err
		}
		singleLine, err := Migrations(single)
		if err != nil {
			return err
		}
		line, err := Migrations(cfg)
		if err != nil {
			return err
		}
		if err := migrate.Forget(ctx, tx, singleLine); err != nil {
			return err
		}
		if err := migrate.Up(ctx, tx, line); err != nil {
			return err
		}
		// Partitions from the oldest claim's period to the coming ones.
		stmt, err := s.renderDDL("convert_oldest", extra)
		if err != nil {
			return err
		}
		var oldest *time.Time
		if err := tx.QueryRow(ctx, stmt).Scan(&oldest); err != nil {
			return err
		}
		var now time.Time
		if err := tx.QueryRow(ctx, s.sql.DBNow).Scan(&now); err != nil {
			return err
		}
		step := time.Duration(cfg.PartitionsAhead+1) * cfg.PartitionPeriod
		from := now
		if oldest != nil && oldest.Before(now) {
			from = *oldest
		}
		for at := from; ; at = at.Add(step) {
			if at.After(now) {
				at = now // the current period and those ahead, last
			}
			ch, err := s.createPartitions(ctx, at)
			if err != nil {
				return err
			}
			conv.Created = append(conv.Created, ch.Created...)
			if at.Equal(now) {
				break
			}
		}
		stmt, err = s.renderDDL("convert_copy", extra)
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, stmt)
		if err != nil {
			return fmt.Errorf("copy the tokens: %w", err)
		}
		conv.Copied = tag.RowsAffected()
		return nil
	})
	if err != nil {
		return Conversion{}, fmt.Errorf("inbox: convert to partitioned: %w", err)
	}
	return conv, nil
}

// execTemplate runs the DDL template ddl/name.sql with extra variables.
func (s *Store) execTemplate(ctx context.Context, tx pgx.Tx, name string, extra map[string]string) error {
	stmt, err := s.renderDDL(name, extra)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
