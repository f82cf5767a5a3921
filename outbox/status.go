package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/exactlyhq/exactly"
)

// ShardStatus describes one shard of an outbox table.
type ShardStatus struct {
	Shard int
	// Backlog is the number of rows waiting to be published.
	Backlog int64
	// Oldest is when the oldest waiting row was enqueued; zero without one.
	Oldest time.Time
	// Owned is whether a relay holds the shard's lock.
	Owned bool
	// Outside is whether the shard is outside 0..Config.Shards-1: its rows
	// were enqueued by writers configured with more shards, and no relay
	// configured with Config.Shards reads them.
	Outside bool
}

// Shards reports the backlog and owner of every shard of the table cfg
// names, 0 to cfg.Shards-1, in order, followed by any other shard holding
// waiting rows (Outside: written by writers configured with more shards, and
// published by no relay configured with cfg). It counts the waiting rows:
// meant for operators and alerts.
func Shards(ctx context.Context, db exactly.DB, cfg Config) ([]ShardStatus, error) {
	ob, err := New(cfg)
	if err != nil {
		return nil, err
	}
	cfg = ob.cfg
	rows, err := db.Query(ctx, ob.sql.Shards, cfg.Shards, lockKeyPrefix(cfg))
	if err != nil {
		return nil, fmt.Errorf("outbox: shards: %w", err)
	}
	var out []ShardStatus
	var st ShardStatus
	var oldest *time.Time
	_, err = pgx.ForEachRow(rows, []any{&st.Shard, &st.Backlog, &oldest, &st.Owned, &st.Outside}, func() error {
		st.Oldest = time.Time{}
		if oldest != nil {
			st.Oldest = *oldest
		}
		out = append(out, st)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: shards: %w", err)
	}
	return out, nil
}
