package outbox

import (
	"context"
	"fmt"
	"time"
)

// prune deletes published rows older than KeepPublished in bounded batches.
func (r *Relay) prune(ctx context.Context) {
	t := time.NewTicker(r.cfg.PruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := r.PrunePublished(ctx, time.Now().Add(-r.cfg.KeepPublished))
		if err != nil && ctx.Err() == nil {
			r.log.Warn("pruning published rows failed", "err", err)
		} else if n > 0 {
			r.log.Debug("pruned published rows", "rows", n)
		}
	}
}

// PrunePublished deletes rows published before before, PruneBatchSize per
// statement, and returns how many it deleted.
func (r *Relay) PrunePublished(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for {
		tag, err := r.pool.Exec(ctx, r.ob.sql.PrunePublished, before, r.cfg.PruneBatchSize)
		if err != nil {
			return total, fmt.Errorf("outbox: prune: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(r.cfg.PruneBatchSize) {
			return total, nil
		}
	}
}
