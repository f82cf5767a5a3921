package consumer

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Attempts that kill the process.
//
// A handler that kills its process (a crash, an OOM kill, os.Exit) never
// returns an error, so counting attempts in memory would let such a message
// loop forever across restarts. Writing a row before every batch would cost
// a transaction per batch; instead the consumer writes one row when it takes
// a partition over, for its first batch (from the committed offset): "a
// batch from here to there started once". If that row is still there at the
// next assignment, an earlier owner started at this offset and never got
// past it. Then, up to the end of that batch (or the last message an
// earlier owner started alone), the partition runs one message at a time,
// and records each attempt, committed, before the handler runs; a message
// whose recorded attempts reach MaxAttempts without settling is
// dead-lettered as process_died. Once past the offsets an earlier owner may have died on,
// the partition runs in batches again. A member runs one such attempt at a
// time across its partitions, so that a death is charged to the message
// running alone, not also to a slow message of another partition that
// happened to run beside it (a batch of a partition not under suspicion
// still may run beside it).
//
// A message that kills the process is so dead-lettered after at most two
// deaths in batches and MaxAttempts one at a time. An operator's SIGKILL
// counts as a death of the message it hit, but only a message hit
// MaxAttempts times in a row while running alone is dead-lettered, and a
// dead letter can be replayed.

// suspects is what an assignment found of attempts that may have died.
// (partition.startRow is the offset of this assignment's start row until
// a batch settled, else -1.)
type suspects struct {
	starts map[int64]int // offset → attempts recorded; nil when none
	last   int64         // the last offset an earlier owner may have died on
}

// beginAssignment reads the attempts recorded at or above first, the first
// offset fetched after the partition was assigned, and records the start of
// the first batch, first to last, when there are none.
func (p *partition) beginAssignment(ctx context.Context, first, last int64) error {
	pool, q := p.c.cfg.Pool, p.c.sql
	rows, err := pool.Query(ctx, q.AttemptsRead, p.c.cfg.GroupID, p.topic, p.id, first)
	if err != nil {
		return fmt.Errorf("read attempts: %w", err)
	}
	starts := map[int64]int{}
	var offset, upTo, suspectUpTo int64
	var n int
	found := false
	lowest := int64(-1)
	if _, err := pgx.ForEachRow(rows, []any{&offset, &n, &upTo}, func() error {
		found = true
		if lowest < 0 {
			lowest = offset // rows come in offset order
		}
		// A batch's start is no attempt of its first message: the death
		// may have been any message's of the batch. Only a message that
		// ran alone is blamed.
		if upTo == offset {
			starts[offset] = n
		}
		suspectUpTo = max(suspectUpTo, upTo)
		return nil
	}); err != nil {
		return fmt.Errorf("read attempts: %w", err)
	}
	if found {
		// Batches are committed soon after they settle: attempts whose
		// first row is much further on are from before the offsets went
		// back (a reset, an expired group), not a death here. (The first
		// row, not the last: on a compacted topic, or one full of
		// transaction markers, a batch spans more offsets than messages.)
		// (Lanes record their row at the watermark, up to MaxPending
		// before where they run.)
		limit := 4 * int64(p.c.cfg.BatchSize)
		if p.c.cfg.KeyConcurrency > 1 {
			limit += int64(p.c.cfg.MaxPending)
		}
		if lowest-first <= limit {
			p.suspects = suspects{starts: starts, last: suspectUpTo}
			p.log.Warn("an earlier owner started this partition here and did not get past it; running one message at a time, counting attempts", "offset", first, "until_offset", suspectUpTo)
			return nil
		}
		if _, err := pool.Exec(ctx, q.AttemptsClear, p.c.cfg.GroupID, p.topic, p.id); err != nil {
			return fmt.Errorf("clear attempts: %w", err)
		}
	}
	if _, err := pool.Exec(ctx, q.AttemptsStart, p.c.cfg.GroupID, p.topic, p.id, first, 1, last); err != nil {
		return fmt.Errorf("record start: %w", err)
	}
	p.startRow = first
	return nil
}

// startAttempt prepares it, the only message of the next batch while the
// partition runs one message at a time: it counts the attempts recorded for
// it, dead-letters it when they reach MaxAttempts, and otherwise records
// the attempt about to start.
func (p *partition) startAttempt(ctx context.Context, it *item) error {
	if n, ok := p.suspects.starts[it.msg.Offset]; ok {
		it.attempts = max(it.attempts, n)
		delete(p.suspects.starts, it.msg.Offset)
	}
	if it.reason != "" {
		return nil
	}
	if it.attempts >= p.c.cfg.MaxAttempts {
		if it.err == nil {
			it.reason = ReasonProcessDied
			it.err = fmt.Errorf("the process ended while handling this message: %d attempts started, none finished", it.attempts)
		} else {
			it.reason = handlerReason(it.err)
		}
		return nil
	}
	if _, err := p.c.cfg.Pool.Exec(ctx, p.c.sql.AttemptsStart, p.c.cfg.GroupID, p.topic, p.id, it.msg.Offset, it.attempts+1, it.msg.Offset); err != nil {
		return fmt.Errorf("record attempt: %w", err)
	}
	return nil
}

// settledAttempts deletes, in tx, the attempts recorded for settled, the
// messages tx settles: a message that settled did not die, however often
// its process died before its offset was committed. The first batch that
// settles after an assignment also deletes the assignment's start row: a
// start row still there at the next assignment means that the first batch
// never committed. Nothing to do otherwise.
func (p *partition) settledAttempts(ctx context.Context, tx pgx.Tx, settled []*item) error {
	if len(settled) == 0 || (p.suspects.starts == nil && p.startRow < 0) {
		return nil
	}
	var offsets []int64
	if p.startRow >= 0 {
		offsets = append(offsets, p.startRow)
	}
	if p.suspects.starts != nil {
		for _, it := range settled {
			offsets = append(offsets, it.msg.Offset)
		}
	}
	if _, err := tx.Exec(ctx, p.c.sql.AttemptsSettled, p.c.cfg.GroupID, p.topic, p.id, offsets); err != nil {
		return fmt.Errorf("forget settled attempts: %w", err)
	}
	return nil
}

// committed is told that the transaction of the last settledAttempts
// committed.
func (p *partition) committed() {
	if p.startRow >= 0 { // never with lanes, which run at once
		p.startRow = -1
	}
}

// unrecordAttempt takes back the attempt startAttempt recorded for it, when
// the attempt ended because the consumer cancelled it, not because the
// process died. It runs on a context of its own: ctx is already done.
func (p *partition) unrecordAttempt(ctx context.Context, it *item) {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := p.c.cfg.Pool.Exec(uctx, p.c.sql.AttemptsStart, p.c.cfg.GroupID, p.topic, p.id, it.msg.Offset, it.attempts, it.msg.Offset); err != nil {
		p.log.Warn("could not take back a cancelled attempt; it counts as one", "offset", it.msg.Offset, "err", err)
	}
}
