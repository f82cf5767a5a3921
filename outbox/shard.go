package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/exactlyhq/exactly/internal/retry"
	"github.com/exactlyhq/exactly/internal/testhook"
)

// listen wakes every shard on each notification, on a connection of its
// own, re-established after loss. A reconnect wakes every shard too:
// notifications sent while it was down are lost.
func (r *Relay) listen(ctx context.Context, wakes []chan struct{}) {
	wakeAll := func() {
		for _, w := range wakes {
			select {
			case w <- struct{}{}:
			default:
			}
		}
	}
	bo := r.newBackoff()
	for ctx.Err() == nil {
		err := r.listenOnce(ctx, wakeAll, bo)
		if ctx.Err() != nil {
			return
		}
		wait := bo.NextBackOff()
		r.log.Warn("LISTEN connection lost; polling until it is back", "err", err, "backoff", wait)
		if !retry.Sleep(ctx, wait) {
			return
		}
	}
}

func (r *Relay) listenOnce(ctx context.Context, wakeAll func(), bo backoff.BackOff) error {
	testhook.Run("outbox.before-listen")
	conn, err := pgx.ConnectConfig(ctx, r.pool.Config().ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{r.cfg.Outbox.Channel()}.Sanitize()); err != nil {
		return err
	}
	bo.Reset()
	wakeAll()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		wakeAll()
	}
}

// runShard owns the shard whenever no other relay does and publishes it.
func (r *Relay) runShard(ctx, work context.Context, shard int, wake <-chan struct{}) {
	log := r.log.With("shard", shard)
	// Spread the first lock attempts of relays started together.
	if !retry.Sleep(ctx, time.Duration(rand.Int64N(int64(r.cfg.LockInterval)/4+1))) {
		return
	}
	for ctx.Err() == nil {
		conn, err := r.own(ctx, shard)
		if err != nil {
			log.Warn("cannot try the shard lock", "err", err)
		}
		if conn == nil {
			if !retry.Sleep(ctx, r.cfg.LockInterval) {
				return
			}
			continue
		}
		r.owned.Add(1)
		log.Info("shard owned")
		err = r.publishShard(ctx, work, conn, shard, wake, log)
		r.owned.Add(-1)
		// Closing the session releases the advisory lock.
		_ = conn.Close(context.WithoutCancel(ctx))
		if ctx.Err() != nil {
			return
		}
		log.Warn("shard released after an error; retaking it", "err", err)
		if !retry.Sleep(ctx, r.cfg.RetryInitial) {
			return
		}
	}
}

// own returns a connection holding the shard's advisory lock, or nil when
// another relay owns the shard.
func (r *Relay) own(ctx context.Context, shard int) (*pgx.Conn, error) {
	c, err := r.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	var got bool
	key := lockKeyPrefix(r.cfg.Outbox) + strconv.Itoa(shard)
	if err := c.QueryRow(ctx, r.ob.sql.LockShard, key).Scan(&got); err != nil {
		c.Release()
		return nil, err
	}
	if !got {
		c.Release()
		return nil, nil
	}
	// The lock lives as long as the session: take the connection out of
	// the pool so that nobody else uses (or resets) it.
	conn := c.Hijack()
	idle := strconv.FormatInt(max(2*r.cfg.RoundTimeout, r.cfg.RetryMax+r.cfg.PollInterval+r.cfg.RoundTimeout).Milliseconds(), 10)
	if _, err := conn.Exec(ctx, r.ob.sql.SessionTimeout, idle); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42704" { // 42704: before Postgres 14
			_ = conn.Close(context.WithoutCancel(ctx))
			return nil, err
		}
	}
	return conn, nil
}

// lockKeyPrefix is the text whose hash, with the shard number appended,
// is the shard's advisory lock key.
func lockKeyPrefix(c Config) string { return "exactly.outbox:" + c.Schema + "." + c.Table + ":" }

func (r *Relay) publishShard(ctx, work context.Context, conn *pgx.Conn, shard int, wake <-chan struct{}, log *slog.Logger) error {
	bo := r.newBackoff()
	blocked := map[string]*blockedKey{}
	var lingerUntil time.Time
	for ctx.Err() == nil {
		if err := r.round(ctx, work, conn, shard, wake, log, bo, blocked, &lingerUntil); err != nil {
			return err
		}
	}
	return nil
}

// round reads a shard's pending rows, publishes and deletes them, or waits
// for some, under RoundTimeout: on a connection whose peer vanished without
// closing it, a statement would otherwise wait for the operating system's
// TCP timers, minutes to hours, with the shard stalled.
func (r *Relay) round(ctx, work context.Context, conn *pgx.Conn, shard int, wake <-chan struct{}, log *slog.Logger, bo *backoff.ExponentialBackOff, blocked map[string]*blockedKey, lingerUntil *time.Time) error {
	work, cancel := context.WithTimeout(work, r.cfg.RoundTimeout)
	defer cancel()
	{
		next, err := r.retryBlocked(work, conn, r.pubs[shard], blocked, log)
		if err != nil {
			return err
		}
		keys := make([][]byte, 0, len(blocked))
		for k := range blocked {
			keys = append(keys, []byte(k))
		}
		rows, err := r.fetchPending(work, conn, r.pubs[shard], shard, keys)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			wait := r.cfg.PollInterval
			if time.Now().Before(*lingerUntil) {
				wait = r.cfg.LingerPoll
			} else if r.cfg.Linger > 0 {
				// Rows held back by an older transaction still running
				// get no notification when it ends: keep polling, at ten
				// times LingerPoll (a long transaction could hold them for
				// minutes).
				var held bool
				if err := conn.QueryRow(work, r.ob.sql.HeldBack, shard, keys).Scan(&held); err != nil {
					return fmt.Errorf("read outbox: %w", err)
				}
				if held {
					wait = min(r.cfg.PollInterval, 10*r.cfg.LingerPoll)
				}
			}
			if !next.IsZero() {
				wait = min(wait, time.Until(next))
			}
			t := time.NewTimer(max(wait, 0))
			select {
			case <-ctx.Done():
			case <-wake:
			case <-t.C:
			}
			t.Stop()
			return nil
		}
		if r.cfg.Linger > 0 {
			*lingerUntil = time.Now().Add(r.cfg.Linger)
		}
		transient, err := r.publishRows(work, conn, r.pubs[shard], rows, blocked, log)
		if err != nil {
			return err
		}
		if transient != nil {
			wait := bo.NextBackOff()
			log.Warn("publish failed; rows stay in the outbox", "rows", len(rows), "backoff", wait, "err", transient)
			if !retry.Sleep(ctx, wait) {
				return nil
			}
			return nil
		}
		bo.Reset()
	}
	return nil
}
