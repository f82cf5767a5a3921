package consumer

import (
	"context"
	"fmt"
	"time"

	"github.com/exactlyhq/exactly/inbox"
)

// maintain keeps the consumer's tables in shape until ctx ends: every
// Config.MaintenanceInterval, from the start, it creates the coming
// partitions of a partitioned inbox and applies InboxRetention and
// DeadLetterRetention. Failures are logged; the next round tries again.
func (c *Consumer) maintain(ctx context.Context) {
	if !c.maintains() {
		return
	}
	t := time.NewTicker(c.cfg.MaintenanceInterval)
	defer t.Stop()
	for {
		if err := c.maintainOnce(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("table maintenance failed; trying again at the next round", "err", err, "interval", c.cfg.MaintenanceInterval)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// maintains reports whether the configuration leaves maintain anything to do.
func (c *Consumer) maintains() bool {
	partitioned := !c.cfg.AtLeastOnce && c.cfg.Inbox.Layout == inbox.LayoutPartitioned
	return partitioned || c.cfg.InboxRetention > 0 || c.cfg.DeadLetterRetention > 0
}

// maintainOnce is one round of maintain.
func (c *Consumer) maintainOnce(ctx context.Context) error {
	partitioned := !c.cfg.AtLeastOnce && c.cfg.Inbox.Layout == inbox.LayoutPartitioned
	if partitioned {
		ch, err := c.inbox.CreatePartitions(ctx)
		c.logPartitions(ch)
		if err != nil {
			return err
		}
	}
	if c.cfg.InboxRetention == 0 && c.cfg.DeadLetterRetention == 0 {
		return nil
	}
	var now time.Time
	if err := c.cfg.Pool.QueryRow(ctx, c.sql.DBNow).Scan(&now); err != nil {
		return fmt.Errorf("read the database's clock: %w", err)
	}
	if c.cfg.InboxRetention > 0 {
		before := now.Add(-c.cfg.InboxRetention)
		if partitioned {
			ch, err := c.inbox.DropPartitions(ctx, before)
			c.logPartitions(ch)
			if err != nil {
				return err
			}
		}
		n, err := c.inbox.Prune(ctx, before)
		if n > 0 {
			c.log.Info("pruned inbox tokens", "tokens", n, "before", before)
		}
		if err != nil {
			return err
		}
	}
	if c.cfg.DeadLetterRetention > 0 {
		before := now.Add(-c.cfg.DeadLetterRetention)
		n, err := c.PruneDeadLetters(ctx, before)
		if n > 0 {
			c.log.Info("deleted resolved dead letters", "dead_letters", n, "resolved_before", before)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *Consumer) logPartitions(ch inbox.PartitionChanges) {
	for _, p := range ch.Created {
		c.log.Info("created inbox partition", "partition", p.Name, "from", p.From, "to", p.To)
	}
	if ch.Moved > 0 {
		c.log.Info("moved inbox tokens from the default partition into new partitions", "tokens", ch.Moved)
	}
	for _, p := range ch.Skipped {
		c.log.Warn("inbox partition not created: the default partition holds too many of its tokens; they are retired row by row",
			"partition", p.Name, "from", p.From, "to", p.To, "limit", inbox.PartitionMoveLimit)
	}
	for _, p := range ch.Dropped {
		c.log.Info("dropped inbox partition", "partition", p.Name, "from", p.From, "to", p.To)
	}
}

// PruneDeadLetters deletes the dead letters of the consumer's scope that
// were resolved (replayed or discarded) before before, Config.PruneBatchSize
// per statement, and returns how many it deleted. Unresolved dead letters
// are never deleted. Derive before from the database's clock, which stamped
// resolved_at.
func (c *Consumer) PruneDeadLetters(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for {
		tag, err := c.cfg.Pool.Exec(ctx, c.sql.DeadLettersPrune, c.cfg.Inbox.Scope, before, c.cfg.PruneBatchSize)
		if err != nil {
			return total, fmt.Errorf("consumer: prune dead letters: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(c.cfg.PruneBatchSize) {
			return total, nil
		}
	}
}
