package outbox

import (
	"context"
	"fmt"
	"time"
)

// prune deletes, every PruneInterval, published rows older than
// KeepPublished and dead letters resolved longer ago than
// DeadLetterRetention, by the database's clock, which stamped both.
func (r *Relay) prune(ctx context.Context) {
	t := time.NewTicker(r.cfg.PruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := r.pruneOnce(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("pruning failed; trying again at the next round", "err", err)
		}
	}
}

func (r *Relay) pruneOnce(ctx context.Context) error {
	var now time.Time
	if err := r.pool.QueryRow(ctx, r.ob.sql.DBNow).Scan(&now); err != nil {
		return fmt.Errorf("outbox: read the database's clock: %w", err)
	}
	if r.cfg.KeepPublished > 0 {
		n, err := r.PrunePublished(ctx, now.Add(-r.cfg.KeepPublished))
		if err != nil {
			return err
		}
		if n > 0 {
			r.log.Debug("pruned published rows", "rows", n)
		}
	}
	if r.cfg.DeadLetterRetention > 0 {
		n, err := r.PruneDeadLetters(ctx, now.Add(-r.cfg.DeadLetterRetention))
		if err != nil {
			return err
		}
		if n > 0 {
			r.log.Info("deleted resolved outbox dead letters", "dead_letters", n)
		}
	}
	return nil
}

// PrunePublished deletes rows published before before, PruneBatchSize per
// statement, and returns how many it deleted.
func (r *Relay) PrunePublished(ctx context.Context, before time.Time) (int64, error) {
	return r.pruneBatches(ctx, r.ob.sql.PrunePublished, before)
}

// PruneDeadLetters deletes the outbox's dead letters resolved (replayed or
// discarded) before before, PruneBatchSize per statement, and returns how
// many it deleted. Unresolved dead letters are never deleted.
func (r *Relay) PruneDeadLetters(ctx context.Context, before time.Time) (int64, error) {
	return r.pruneBatches(ctx, r.ob.sql.PruneDeadLetters, before)
}

func (r *Relay) pruneBatches(ctx context.Context, query string, before time.Time) (int64, error) {
	var total int64
	for {
		tag, err := r.pool.Exec(ctx, query, before, r.cfg.PruneBatchSize)
		if err != nil {
			return total, fmt.Errorf("outbox: prune: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(r.cfg.PruneBatchSize) {
			return total, nil
		}
	}
}
