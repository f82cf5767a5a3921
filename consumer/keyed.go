package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/exactlyhq/exactly/internal/retry"
)

// Key-level concurrency (Config.KeyConcurrency).
//
// A partition's messages run in lanes: up to KeyConcurrency transactions at
// once, each over a batch of messages whose keys no other lane holds. A key
// is held from the moment one of its messages enters a lane until that
// lane's transaction ends, so two messages of one key never run at once nor
// out of order. Messages without a key share the key "" and so keep their
// partition order among themselves.
//
// The offset committed is the watermark: the offset of the first message
// not settled, never past a message whose transaction has not committed.
// Messages beyond it that committed are redelivered after a crash or a
// rebalance and skipped by the inbox, which is what lets the watermark be
// all the offset state there is (no per-message offsets in commit metadata).
//
// A message whose handler fails holds only its key: the key waits out its
// backoff while the other keys flow, and the watermark stays before the
// message until it succeeds or is dead-lettered. A transient failure (an
// outage) pauses the partition's new lanes for the backoff. At most
// MaxPending messages are held beyond the watermark (plus one fetch): then
// fetching waits, so a stuck key stalls the partition instead of growing
// memory.
//
// A process that dies in a lane: before a lane takes messages beyond what
// the partition's attempt row covers, the row is moved to the watermark and
// extended to the last message fetched, committed before the lane's handler
// runs. The next owner finds it, from its committed offset,
// and runs up to its end one message at a time, counting attempts, as after
// a death in a batch (attempts.go).

// keyState is what the dispatcher knows of one key.
type keyState struct {
	key     string
	queue   []*item   // waiting, in offset order
	busy    bool      // in a lane
	retryAt time.Time // after a handler failure: not before then
	queued  bool      // in runnable
}

// laneResult is what a lane's transaction did with its batch.
type laneResult struct {
	batch []*item
	n     int // batch[:n] settled
	err   error
	took  time.Duration
}

// keyed dispatches one partition's messages to lanes.
type keyed struct {
	p        *partition
	window   []*item // accepted and not yet passed by the watermark, in offset order
	keys     map[string]*keyState
	runnable []*keyState                 // keys with waiting messages, neither busy nor waiting to retry
	waiting  []*keyState                 // keys waiting to retry
	items    int                         // messages waiting in runnable keys
	since    time.Time                   // when the oldest runnable message became runnable
	covered  int64                       // the last offset the attempt row covers; -1: none
	pause    time.Time                   // after a transient failure: no new lane before then
	bo       *backoff.ExponentialBackOff // the partition's, for transient failures
	inflight int
	lanes    lanes
}

// lanes is how many lanes a partition runs at once, between 1 and
// KeyConcurrency, adjusted the way TCP Vegas adjusts a window: while the
// time a lane takes per message stays near the best seen, the handlers wait
// on something else than this machine (a slow call, a sleep) and another
// lane adds throughput; when it grows, lanes only queue for the same CPU,
// connections or locks, and one fewer does as well. So slow handlers get
// many lanes and fast ones about as few as strict order uses, which is what
// keeps the fast path from getting slower with the option on.
type lanes struct {
	limit   float64
	max     int
	best    time.Duration // the least time per message seen lately
	typical time.Duration // a lane's duration, moving average
	samples int
	last    time.Time // the last lane's end, or the start
}

// stalled reports whether no lane ended for long while messages wait, as
// when every lane holds a stuck key: then one more lane may start, so that
// a stuck key holds only its key.
func (l *lanes) stalled(now time.Time) bool {
	return now.Sub(l.last) > l.stallAfter()
}

func (l *lanes) stallAfter() time.Duration { return max(100*time.Millisecond, 4*l.typical) }

// grow lets one more lane start.
func (l *lanes) grow(now time.Time) {
	l.limit = min(float64(l.max), float64(int(l.limit)+1))
	l.last = now
}

func (l *lanes) allowed() int { return max(1, min(l.max, int(l.limit))) }

// observe takes the duration of a lane that settled its batch of n.
func (l *lanes) observe(took time.Duration, n int) {
	perMsg := took / time.Duration(n)
	l.typical = (7*l.typical + took) / 8
	l.samples++
	if l.best == 0 || perMsg < l.best {
		l.best = perMsg
	}
	if l.samples%100 == 0 {
		l.best += l.best / 10 // forget slowly: the handler's cost may change
	}
	switch ratio := float64(perMsg) / float64(l.best); {
	case ratio < 1.5:
		l.limit = min(float64(l.max), l.limit+1)
	case ratio > 2.5:
		l.limit = max(1, l.limit-1)
	}
}

// runKeyed processes the partition in lanes (Config.KeyConcurrency) until
// fetchCtx ends, then waits for the lanes in flight. queue holds messages
// already fetched.
func (p *partition) runKeyed(fetchCtx, procCtx context.Context, chunks <-chan fetched, queue []*item) {
	cfg := &p.c.cfg
	k := &keyed{p: p, keys: map[string]*keyState{}, covered: -1, bo: p.c.newBackoff(),
		lanes: lanes{limit: 1, max: cfg.KeyConcurrency, last: time.Now()}}
	for _, it := range queue {
		k.accept(it)
	}
	results := make(chan laneResult, cfg.KeyConcurrency)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	defer k.clearRow(procCtx)
	stopping := false
	for {
		now := time.Now()
		k.wake(now)
		if k.items > 0 && k.inflight >= k.lanes.allowed() && k.lanes.stalled(now) {
			k.lanes.grow(now)
		}
		if !stopping {
			for k.inflight < k.lanes.allowed() && now.After(k.pause) && k.ready(now) {
				batch := k.take()
				if err := k.cover(procCtx, batch); err != nil {
					k.giveBack(batch, 0, nil)
					k.transient(procCtx, err, len(batch))
					break
				}
				k.inflight++
				go func() {
					start := time.Now()
					n, err := p.lane(procCtx, batch)
					results <- laneResult{batch: batch, n: n, err: err, took: time.Since(start)}
				}()
			}
		}
		if stopping && k.inflight == 0 {
			if len(k.window) > 0 {
				p.log.Info("abandoning uncommitted messages; they will be redelivered", "count", len(k.window), "from_offset", k.window[0].msg.Offset)
			}
			return
		}
		var in <-chan fetched
		if !stopping && len(k.window) < cfg.MaxPending {
			in = chunks
		}
		timer.Reset(k.next(now))
		select {
		case fr := <-in:
			k.add(fr)
		case r := <-results:
			k.inflight--
			k.lanes.last = time.Now()
			k.done(procCtx, r)
		case <-timer.C:
		case <-fetchCtx.Done():
			stopping = true
		}
	}
}

// lane runs one transaction over batch.
func (p *partition) lane(ctx context.Context, batch []*item) (int, error) {
	if d := p.c.cfg.TransactionTimeout; d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	return p.process(ctx, batch)
}

// add accepts a fetched chunk.
func (k *keyed) add(fr fetched) {
	for _, m := range fr.msgs {
		it := k.p.prepare(m)
		it.commitTo = m.Offset + 1
		k.accept(it)
	}
	switch {
	case len(k.window) > 0:
		last := k.window[len(k.window)-1]
		last.commitTo = max(last.commitTo, fr.next)
	case fr.next > 0:
		k.p.settle(fr.next) // only markers or aborted records: nothing to settle
	}
}

func (k *keyed) accept(it *item) {
	k.window = append(k.window, it)
	key := string(it.msg.Key)
	ks := k.keys[key]
	if ks == nil {
		ks = &keyState{key: key}
		k.keys[key] = ks
	}
	ks.queue = append(ks.queue, it)
	if ks.queued {
		k.items++
	} else {
		k.makeRunnable(ks)
	}
}

// makeRunnable queues ks for a lane unless it is busy or waiting.
func (k *keyed) makeRunnable(ks *keyState) {
	if ks.busy || ks.queued || len(ks.queue) == 0 || !ks.retryAt.IsZero() {
		return
	}
	if k.items == 0 {
		k.since = time.Now()
	}
	ks.queued = true
	k.runnable = append(k.runnable, ks)
	k.items += len(ks.queue)
}

// ready reports whether a lane should start now: a full batch is waiting,
// or no lane runs, or the oldest waiting message waited BatchWait.
func (k *keyed) ready(now time.Time) bool {
	cfg := &k.p.c.cfg
	return k.items > 0 && (k.items >= cfg.BatchSize || k.inflight == 0 || now.Sub(k.since) >= cfg.BatchWait)
}

// take returns the next batch: the waiting messages of runnable keys, in
// the order the keys became runnable, up to BatchSize. Its keys are busy
// until done.
func (k *keyed) take() []*item {
	limit := k.p.c.cfg.BatchSize
	var batch []*item
	for len(batch) < limit && len(k.runnable) > 0 {
		ks := k.runnable[0]
		k.runnable = k.runnable[1:]
		ks.queued = false
		n := min(len(ks.queue), limit-len(batch))
		batch = append(batch, ks.queue[:n]...)
		ks.queue = ks.queue[n:]
		k.items -= len(ks.queue) + n
		ks.busy = true
	}
	if k.items > 0 {
		k.since = time.Now()
	}
	return batch
}

// cover makes the partition's attempt row cover batch before its handler
// runs: from the watermark to the last message fetched, so that one write
// covers every batch taken from what is in memory. Not further: the next
// owner runs the row's range one message at a time, and offsets not yet
// written would keep it at that until they are.
func (k *keyed) cover(ctx context.Context, batch []*item) error {
	last := int64(-1)
	for _, it := range batch {
		last = max(last, it.msg.Offset)
	}
	if last <= k.covered {
		return nil
	}
	p := k.p
	from := k.window[0].msg.Offset
	upTo := k.window[len(k.window)-1].msg.Offset
	if _, err := p.c.cfg.Pool.Exec(ctx, p.c.sql.AttemptsWindow, p.c.cfg.GroupID, p.topic, p.id, from, upTo); err != nil {
		return fmt.Errorf("record the lanes' window: %w", err)
	}
	k.covered = upTo
	return nil
}

// clearRow forgets the attempt row once no lane runs: none died.
func (k *keyed) clearRow(ctx context.Context) {
	if k.covered < 0 {
		return
	}
	p := k.p
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := p.c.cfg.Pool.Exec(cctx, p.c.sql.AttemptsClear, p.c.cfg.GroupID, p.topic, p.id); err != nil {
		p.log.Warn("could not clear the lanes' attempt row; the next owner runs its window one message at a time", "err", err)
	}
}

// done takes a lane's result: settled messages move the watermark, the
// others go back to their keys, a failed message's key waits.
func (k *keyed) done(ctx context.Context, r laneResult) {
	p := k.p
	cfg := &p.c.cfg
	for _, it := range r.batch[:r.n] {
		it.settled = true
	}
	rest := r.batch[r.n:]
	var failed *item
	var he *handlerError
	switch {
	case r.err == nil:
		k.bo.Reset()
		k.lanes.observe(r.took, len(r.batch))
	case len(rest) > 0 && errors.As(r.err, &he) && !isTransient(he.err) && ctx.Err() == nil:
		failed = rest[0]
		wait := keyBackoff(cfg, failed.attempts)
		failed.retryAfter = wait
		p.c.metrics.retries.Add(ctx, 1, p.attrs, metric.WithAttributes(attribute.String("kind", "handler")))
		p.log.WarnContext(failed.logContext(ctx), "handler failed; retrying message, its key waits", "offset", failed.msg.Offset,
			"attempt", failed.attempts, "max_attempts", cfg.MaxAttempts, "backoff", wait, "err", he.err)
	case ctx.Err() == nil:
		k.transient(ctx, r.err, len(rest))
	}
	k.giveBack(r.batch, r.n, failed)
	var to int64 = -1
	for len(k.window) > 0 && k.window[0].settled {
		to = k.window[0].commitTo
		k.window[0] = nil
		k.window = k.window[1:]
	}
	if to >= 0 {
		p.settle(to)
	}
}

// transient pauses new lanes after a failure that is no message's fault.
func (k *keyed) transient(ctx context.Context, err error, n int) {
	if ctx.Err() != nil {
		return
	}
	wait := k.bo.NextBackOff()
	k.pause = time.Now().Add(wait)
	k.p.c.metrics.retries.Add(ctx, 1, k.p.attrs, metric.WithAttributes(attribute.String("kind", "transient")))
	k.p.log.Warn("batch failed; retrying", "messages", n, "backoff", wait, "err", err)
}

// giveBack returns the unsettled messages of a batch, batch[n:], to the
// front of their keys' queues and frees the batch's keys; failed's key waits
// for its retry.
func (k *keyed) giveBack(batch []*item, n int, failed *item) {
	var byKey map[string][]*item
	var order []string
	for _, it := range batch[n:] {
		if byKey == nil {
			byKey = map[string][]*item{}
		}
		key := string(it.msg.Key)
		if _, ok := byKey[key]; !ok {
			order = append(order, key)
		}
		byKey[key] = append(byKey[key], it)
	}
	for _, key := range order {
		ks := k.keys[key]
		ks.queue = append(byKey[key], ks.queue...)
	}
	for _, it := range batch {
		ks := k.keys[string(it.msg.Key)]
		if ks == nil || !ks.busy {
			continue // freed for an earlier message of the key
		}
		ks.busy = false
		if failed != nil && ks.key == string(failed.msg.Key) {
			ks.retryAt = time.Now().Add(failed.retryAfter)
			k.waiting = append(k.waiting, ks)
			continue
		}
		k.release(ks)
	}
}

// release makes a free key runnable, or forgets it when nothing waits.
func (k *keyed) release(ks *keyState) {
	if len(ks.queue) == 0 && ks.retryAt.IsZero() {
		delete(k.keys, ks.key)
		return
	}
	k.makeRunnable(ks)
}

// wake makes the keys whose retry is due runnable.
func (k *keyed) wake(now time.Time) {
	kept := k.waiting[:0]
	for _, ks := range k.waiting {
		if ks.retryAt.After(now) {
			kept = append(kept, ks)
			continue
		}
		ks.retryAt = time.Time{}
		k.release(ks)
	}
	clear(k.waiting[len(kept):])
	k.waiting = kept
}

// next returns how long the dispatcher may sleep: until a key's retry, the
// end of a pause, or the oldest waiting message's BatchWait.
func (k *keyed) next(now time.Time) time.Duration {
	at := now.Add(time.Hour)
	for _, ks := range k.waiting {
		at = minTime(at, ks.retryAt)
	}
	if k.items > 0 && k.inflight >= k.lanes.allowed() {
		at = minTime(at, k.lanes.last.Add(k.lanes.stallAfter()))
	}
	if k.items > 0 && k.inflight < k.lanes.allowed() { // else a lane's end wakes it
		if k.pause.After(now) {
			at = minTime(at, k.pause)
		} else if k.inflight > 0 {
			at = minTime(at, k.since.Add(k.p.c.cfg.BatchWait))
		}
	}
	return max(at.Sub(now), 0)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// keyBackoff is how long a key waits after its message's attempts-th
// failure: RetryInitial doubled per failure, at most RetryMax.
func keyBackoff(cfg *Config, attempts int) time.Duration {
	d := cfg.RetryInitial
	for i := 1; i < attempts && d < cfg.RetryMax; i++ {
		d *= 2
	}
	return min(d, cfg.RetryMax)
}

// keyedStartFailed logs a failed start of the lanes and waits for the next
// try; it reports false when ctx ended.
func (p *partition) keyedStartFailed(ctx context.Context, bo *backoff.ExponentialBackOff, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	wait := bo.NextBackOff()
	p.log.Warn("reading the attempts of earlier owners failed; retrying", "backoff", wait, "err", err)
	return retry.Sleep(ctx, wait)
}
