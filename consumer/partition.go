package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/retry"
	"github.com/exactlyhq/exactly/internal/testhook"
)

// Test hook names (see internal/testhook).
const (
	hookBeforeDBCommit    = "consumer.before-db-commit"
	hookAfterDBCommit     = "consumer.after-db-commit"
	hookAfterOffsetCommit = "consumer.after-offset-commit"
	hookStartResolved     = "consumer.start-resolved"
)

// partition processes one assigned partition for one generation.
type partition struct {
	c         *Consumer
	gen       *kafka.Generation
	committer *committer
	topic     string
	id        int
	start     int64
	log       *slog.Logger
	attrs     metric.MeasurementOption
	transport *kafka.Transport
	lag       *atomic.Int64
	assigned  bool         // beginAssignment ran
	suspects  suspects     // offsets an earlier owner may have died on
	startRow  int64        // the offset of the assignment's start row until a batch settled; -1 without one
	end       atomic.Int64 // where the partition ends (high watermark or last stable offset); -1 until known
	done      atomic.Int64 // the offset after the last settled message; -1 until known
}

// item is a fetched message and what the consumer learned about it.
type item struct {
	msg        kafka.Message
	token      inbox.Token
	fp         []byte
	reason     string            // non-empty: dead-letter without handling
	err        error             // why, for reason; or the handler's last error
	attempts   int               // handler failures so far
	commitTo   int64             // the offset to commit once it is settled
	settled    bool              // with KeyConcurrency: its transaction committed
	retryAfter time.Duration     // with KeyConcurrency: its key's wait after its last failure
	span       trace.Span        // the span of the attempt in progress, if traced
	lastSpan   trace.SpanContext // the span of its last attempt, for logs
	parent     context.Context   // the producer's trace context, once read (tracing.go)
}

func (c *Consumer) newPartition(gen *kafka.Generation, cm *committer, transport *kafka.Transport, topic string, a kafka.PartitionAssignment) *partition {
	p := &partition{
		c: c, gen: gen, committer: cm, transport: transport, topic: topic, id: a.ID, start: a.Offset,
		log:   c.log.With("topic", topic, "partition", a.ID, "generation", gen.ID),
		attrs: metric.WithAttributes(attribute.String("group", c.cfg.GroupID)),
	}
	p.end.Store(-1)
	p.done.Store(a.Offset)
	p.startRow = -1
	return p
}

// run processes the partition until the generation ends (a rebalance) or
// runCtx ends (shutdown). Fetching stops at once on either; the in-flight
// batch may finish until the generation ends or ShutdownTimeout passes after
// runCtx ended, whichever is first. Nothing uncommitted survives: its
// offsets are not committed and the next owner gets the messages again.
func (p *partition) run(runCtx, genCtx context.Context) {
	cfg := &p.c.cfg
	fetchCtx, cancelFetch := context.WithCancel(genCtx)
	defer cancelFetch()
	stopFetch := context.AfterFunc(runCtx, cancelFetch)
	defer stopFetch()

	procCtx, cancelProc := context.WithCancel(genCtx)
	defer cancelProc()
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() { // the shutdown timer
		defer wg.Done()
		select {
		case <-done:
			return
		case <-runCtx.Done():
		}
		t := time.NewTimer(cfg.ShutdownTimeout)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			cancelProc()
		}
	}()
	defer wg.Wait()
	defer close(done)

	cell, release := p.c.metrics.lag(lagKey{cfg.GroupID, p.topic, p.id})
	defer release()
	p.lag = cell

	f := &fetcher{
		transport: p.transport, addr: kafka.TCP(cfg.Brokers...), topic: p.topic, partition: p.id,
		isolation: cfg.isolation(), maxBytes: fetchMaxBytes, maxWait: cfg.FetchMaxWait,
		startOffset: cfg.StartOffset, next: p.start, onReset: p.reset,
	}
	chunks := make(chan fetched, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.fetchLoop(fetchCtx, f, chunks)
	}()
	p.log.Debug("partition assigned", "offset", p.start)

	bo := p.c.newBackoff()

	var queue, pending []*item // fetched and waiting; the batch being settled
	for {
		if len(pending) == 0 {
			pending, queue = p.nextBatch(fetchCtx, chunks, queue)
			if len(pending) == 0 {
				return // fetchCtx ended
			}
		}
		if cfg.KeyConcurrency > 1 && p.suspects.starts == nil {
			if !p.assigned {
				// The lanes keep the attempt row themselves (keyed.go).
				// A range, not one offset: a row for one offset would read
				// as an attempt of that message alone. Up to what is
				// fetched: the lanes extend it as they go (keyed.go).
				first, last := pending[0].msg.Offset, pending[len(pending)-1].msg.Offset
				if len(queue) > 0 {
					last = queue[len(queue)-1].msg.Offset
				}
				if err := p.beginAssignment(procCtx, first, max(last, first+1)); err != nil {
					if !p.keyedStartFailed(procCtx, bo, err) {
						return
					}
					continue
				}
				p.assigned, p.startRow = true, -1
			}
			if p.suspects.starts == nil {
				p.runKeyed(fetchCtx, procCtx, chunks, append(pending, queue...))
				return
			}
		}
		n, err := p.step(procCtx, pending)
		if n > 0 {
			p.settle(pending[n-1].commitTo)
			pending = pending[n:]
		}
		if err == nil {
			bo.Reset()
			continue
		}
		if procCtx.Err() != nil || runCtx.Err() != nil {
			p.log.Info("abandoning uncommitted messages; they will be redelivered", "count", len(pending), "from_offset", pending[0].msg.Offset, "err", err)
			return
		}
		wait := bo.NextBackOff()
		var he *handlerError
		if errors.As(err, &he) && !isTransient(he.err) {
			it := pending[0]
			p.c.metrics.retries.Add(procCtx, 1, p.attrs, metric.WithAttributes(attribute.String("kind", "handler")))
			p.log.WarnContext(it.logContext(procCtx), "handler failed; retrying message", "offset", it.msg.Offset, "attempt", it.attempts, "max_attempts", cfg.MaxAttempts, "backoff", wait, "err", he.err)
		} else {
			p.c.metrics.retries.Add(procCtx, 1, p.attrs, metric.WithAttributes(attribute.String("kind", "transient")))
			p.log.Warn("batch failed; retrying", "messages", len(pending), "from_offset", pending[0].msg.Offset, "backoff", wait, "err", err)
		}
		if !retry.Sleep(procCtx, wait) {
			p.log.Info("abandoning uncommitted messages; they will be redelivered", "count", len(pending), "from_offset", pending[0].msg.Offset)
			return
		}
	}
}

// step settles a prefix of pending, like process, and first does what
// attempts that kill the process need (attempts.go): at the partition's
// first batch, read the attempts recorded; while past owners may have died
// on the next offsets, one message at a time, its attempt recorded first.
func (p *partition) step(ctx context.Context, pending []*item) (int, error) {
	if d := p.c.cfg.TransactionTimeout; d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	if !p.assigned {
		if err := p.beginAssignment(ctx, pending[0].msg.Offset, pending[len(pending)-1].msg.Offset); err != nil {
			return 0, err
		}
		p.assigned = true
	}
	if p.suspects.starts == nil {
		return p.process(ctx, pending)
	}
	// One such attempt at a time in the whole member: a death is then
	// charged to the one message running alone, not also to a slow one of
	// another partition that happened to run beside it.
	select {
	case p.c.alone <- struct{}{}:
		defer func() { <-p.c.alone }()
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	it := pending[0]
	if err := p.startAttempt(ctx, it); err != nil {
		return 0, err
	}
	n, err := p.process(ctx, pending[:1])
	if n == 0 && err != nil && ctx.Err() != nil && it.reason == "" {
		// Cancelled (a rebalance, a shutdown), not dead: take back the
		// attempt recorded for it, or rolling restarts would add up to
		// MaxAttempts against a healthy message.
		p.unrecordAttempt(ctx, it)
	}
	if n == 1 && it.msg.Offset >= p.suspects.last {
		p.suspects = suspects{}
		p.log.Info("past the offsets an earlier owner may have died on; running batches again", "offset", it.msg.Offset)
	}
	return n, err
}

// newBackoff is the retry policy of batches, fetches and offset commits: exponential from
// RetryInitial to RetryMax, never giving up (outages are waited out, not
// skipped).
func (c *Consumer) newBackoff() *backoff.ExponentialBackOff {
	return retry.NewBackoff(c.cfg.RetryInitial, c.cfg.RetryMax)
}

// fetchMaxBytes bounds one fetch response. Kafka returns a record batch
// larger than this whole, so it limits memory, not message size: a partition
// holds at most a batch being settled and the rest of its response, one
// response waiting in the channel and one being decoded. 4 MiB responses
// held 3× the RSS of kafka-go's Reader in bench-consumer (6 partitions,
// 256 B messages) for no gain in speed.
const fetchMaxBytes = 1 << 20

// fetchMaxBytesCap bounds how far a fetch that made no progress grows its
// response size (a record batch larger than the rest of the response is cut
// off and dropped).
const fetchMaxBytesCap = 64 << 20

// fetchLoop fetches the partition into chunks until ctx ends, retrying
// failed fetches with backoff. A response that holds only control records or
// aborted transactions is sent too, without messages, so that the committed
// offset moves past them.
func (p *partition) fetchLoop(ctx context.Context, f *fetcher, chunks chan<- fetched) {
	var bo *backoff.ExponentialBackOff
	sent := f.next
	for {
		if f.next < 0 {
			if err := f.resolveStart(ctx); err != nil {
				if !p.fetchFailed(ctx, &bo, err) {
					return
				}
				continue
			}
			sent = f.next
		}
		fr, err := f.fetch(ctx)
		if err != nil {
			if !p.fetchFailed(ctx, &bo, err) {
				return
			}
			continue
		}
		bo = nil
		p.end.Store(fr.end)
		if len(fr.msgs) == 0 && fr.next == sent {
			p.storeLag()
			if fr.batches > 0 {
				// Batches, but nothing past the offset: a batch compaction
				// emptied (kafka-go does not show where it ends), or the
				// next batch cut off at maxBytes. Wait instead of spinning
				// on the broker's immediate answer, and ask for more bytes.
				f.maxBytes = min(2*f.maxBytes, fetchMaxBytesCap)
				if !retry.Sleep(ctx, p.c.cfg.FetchMaxWait) {
					return
				}
			}
			continue
		}
		f.maxBytes = fetchMaxBytes
		sent = fr.next
		select {
		case chunks <- fr:
		case <-ctx.Done():
			return
		}
	}
}

// fetchFailed logs a failed fetch and waits for the next try; it reports
// false when ctx ended.
func (p *partition) fetchFailed(ctx context.Context, bo **backoff.ExponentialBackOff, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if *bo == nil {
		*bo = p.c.newBackoff()
	}
	wait := (*bo).NextBackOff()
	p.log.Warn("fetch failed; retrying", "backoff", wait, "err", err)
	return retry.Sleep(ctx, wait)
}

// reset reports that reading moved from an offset the partition does not
// hold to to. Forward, retention deleted messages before this group
// processed them: they are lost to it, which an operator must hear of.
func (p *partition) reset(from, to int64) {
	if from < 0 || to <= from {
		p.log.Warn("offset past the end of the partition (topic recreated or records lost by the broker); reading from "+map[bool]string{true: "its start", false: "its end"}[p.c.cfg.StartOffset == kafka.FirstOffset],
			"offset", from, "now_at", to)
		return
	}
	p.c.metrics.skipped.Add(context.Background(), to-from, p.attrs, metric.WithAttributes(attribute.String("topic", p.topic), attribute.Int("partition", p.id)))
	p.log.Warn("messages deleted by Kafka's retention before they were processed; skipped", "from_offset", from, "to_offset", to, "skipped", to-from)
}

// nextBatch returns the next batch to settle and what stays queued: it
// waits for a first message, then up to BatchWait for more, up to
// BatchSize. It returns no batch when ctx ended.
func (p *partition) nextBatch(ctx context.Context, chunks <-chan fetched, queue []*item) (batch, rest []*item) {
	cfg := &p.c.cfg
	add := func(fr fetched) {
		for _, m := range fr.msgs {
			it := p.prepare(m)
			it.commitTo = m.Offset + 1
			queue = append(queue, it)
		}
		switch {
		case len(queue) > 0:
			// Settling the last message also passes what was skipped after it.
			queue[len(queue)-1].commitTo = max(queue[len(queue)-1].commitTo, fr.next)
		case fr.next > 0:
			p.settle(fr.next) // only markers or aborted records: nothing to settle
		}
	}
	for len(queue) == 0 {
		select {
		case fr := <-chunks:
			add(fr)
		case <-ctx.Done():
			return nil, queue
		}
	}
	if len(queue) < cfg.BatchSize {
		t := time.NewTimer(cfg.BatchWait)
	fill:
		for len(queue) < cfg.BatchSize {
			select {
			case fr := <-chunks:
				add(fr)
			case <-t.C:
				break fill
			case <-ctx.Done():
				break fill
			}
		}
		t.Stop()
	}
	n := min(len(queue), cfg.BatchSize)
	return queue[:n:n], queue[n:]
}

// settle records that every message before offset next is settled in
// Postgres: its offset may be committed.
func (p *partition) settle(next int64) {
	p.committer.add(p.topic, p.id, next)
	p.done.Store(next)
	p.storeLag()
}

func (p *partition) storeLag() {
	if end, done := p.end.Load(), p.done.Load(); end >= 0 && done >= 0 {
		p.lag.Store(max(0, end-done))
	}
}

// prepare checks a message and finds its token once, before any attempt.
func (p *partition) prepare(m kafka.Message) *item {
	cfg := &p.c.cfg
	it := &item{msg: m}
	if n := len(m.Key) + len(m.Value); n > cfg.MaxMessageBytes {
		it.reason, it.err = ReasonOversized, fmt.Errorf("key and value are %d bytes, more than MaxMessageBytes %d", n, cfg.MaxMessageBytes)
		return it
	}
	if cfg.AtLeastOnce {
		return it
	}
	tok, err := cfg.Token.Token(m)
	switch {
	case errors.Is(err, inbox.ErrInvalidToken):
		it.reason, it.err = ReasonInvalidToken, err
	case err != nil:
		it.reason, it.err = ReasonNoToken, err
	default:
		it.token = tok
		it.fp = inbox.Fingerprint(m.Value)
	}
	return it
}

func (it *item) request() inbox.Request {
	return inbox.Request{Token: it.token, Fingerprint: it.fp, Origin: inbox.Origin{Topic: it.msg.Topic, Partition: it.msg.Partition, Offset: it.msg.Offset}}
}

func (p *partition) message(it *item) Message {
	m := Message{Message: it.msg, Token: it.token, Attempt: it.attempts + 1, span: it.span}
	if !p.c.cfg.AtLeastOnce {
		m.store = p.c.inbox
	}
	return m
}

// tally counts a batch's outcomes for metrics and logs.
type tally struct{ processed, duplicates, dead int64 }

// process settles a prefix of items in Postgres and returns its length. An
// error means items[n:] are not settled: a *handlerError when items[n]'s
// handler failed and may be retried, anything else a transient failure of the
// whole attempt.
//
// It first tries the optimistic path: one transaction, one bulk claim, no
// savepoints. If a handler fails, that transaction is rolled back and the
// careful path runs the batch again with a savepoint per message, so the
// failing message neither discards nor double-applies the others.
func (p *partition) process(ctx context.Context, items []*item) (int, error) {
	start := time.Now()
	var (
		n   int
		t   tally
		err error
	)
	ctx, span := p.c.tracer.batch(ctx, p.topic, p.id, items)
	if !retried(items) {
		t, err = p.optimistic(ctx, items)
		var he *handlerError
		switch {
		case err == nil:
			n = len(items)
		case errors.As(err, &he) && !isTransient(he.err):
			if he.index >= 0 {
				items[he.index].attempts++
				items[he.index].err = he.err
			}
			n, t, err = p.careful(ctx, items)
		}
	} else {
		n, t, err = p.careful(ctx, items)
	}
	endBatch(span, n, err)
	if n > 0 {
		p.c.metrics.batchDuration.Record(ctx, time.Since(start).Seconds(), p.attrs)
		p.count(ctx, t)
	}
	return n, err
}

// retried reports whether a message of items failed before: such a batch
// takes the careful path at once.
func retried(items []*item) bool {
	for _, it := range items {
		if it.attempts > 0 {
			return true
		}
	}
	return false
}

func (p *partition) count(ctx context.Context, t tally) {
	for outcome, v := range map[string]int64{"processed": t.processed, "duplicate": t.duplicates, "dead_lettered": t.dead} {
		if v > 0 {
			p.c.metrics.messages.Add(ctx, v, p.attrs, metric.WithAttributes(attribute.String("outcome", outcome)))
		}
	}
	if t.duplicates > 0 || t.dead > 0 {
		p.log.Debug("batch settled", "processed", t.processed, "duplicates", t.duplicates, "dead_lettered", t.dead)
	}
}

func (p *partition) optimistic(ctx context.Context, items []*item) (t tally, err error) {
	if p.c.tracer != nil {
		defer func() {
			if he := (*handlerError)(nil); errors.As(err, &he) && he.index >= 0 {
				items[he.index].endSpan(he.err)
			}
			endSpans(items, err)
		}()
	}
	tx, err := p.begin(ctx)
	if err != nil {
		return t, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit

	reqs := make([]inbox.Request, 0, len(items))
	for _, it := range items {
		if it.reason == "" {
			reqs = append(reqs, it.request())
		}
	}
	claims, err := p.claimBatch(ctx, tx, reqs)
	if err != nil {
		return t, err
	}
	fresh := make([]Message, 0, len(reqs))
	freshIdx := make([]int, 0, len(reqs))
	var dead []*item
	var dups []duplicate // only with Config.OnDuplicate
	// A conflict may be with a claim of this transaction: should it roll
	// back, the next attempt claims again and judges afresh.
	var conflicts []*item
	defer func() {
		if err != nil {
			for _, it := range conflicts {
				it.reason, it.err = "", nil
			}
		}
	}()
	j := 0
	for i, it := range items {
		if it.reason != "" {
			dead = append(dead, it)
			continue
		}
		switch c := claims[j]; c.Outcome {
		case inbox.Fresh:
			p.c.tracer.message(ctx, it, "fresh")
			fresh = append(fresh, p.message(it))
			freshIdx = append(freshIdx, i)
		case inbox.Duplicate:
			t.duplicates++
			p.c.tracer.message(ctx, it, "duplicate")
			if p.c.cfg.OnDuplicate != nil {
				dups = append(dups, duplicate{index: i, stored: c.Stored})
			} else {
				it.endSpan(nil)
			}
		case inbox.Conflict:
			it.reason, it.err = ReasonTokenConflict, conflictError(it, c)
			dead = append(dead, it)
			conflicts = append(conflicts, it)
		case inbox.Expired:
			it.reason, it.err = ReasonTokenExpired, expiredError(it)
			dead = append(dead, it)
			conflicts = append(conflicts, it)
		default:
			return t, fmt.Errorf("inbox: claim of %s: unknown outcome %v", it.token, c.Outcome)
		}
		j++
	}
	if len(fresh) > 0 {
		if err := p.c.handle(ctx, tx, fresh); err != nil {
			var he *handlerError
			if errors.As(err, &he) && he.index >= 0 {
				he.index = freshIdx[he.index]
			}
			return t, err
		}
	}
	for _, d := range dups {
		if err := p.onDuplicate(ctx, tx, items[d.index], d.stored); err != nil {
			return t, &handlerError{index: d.index, err: err}
		}
	}
	for _, it := range dead {
		if err := p.deadLetter(ctx, tx, it); err != nil {
			return t, err
		}
	}
	if err := p.settledAttempts(ctx, tx, items); err != nil {
		return t, err
	}
	testhook.Run(hookBeforeDBCommit)
	if err := tx.Commit(ctx); err != nil {
		// The outcome may be unknown (connection lost during COMMIT). The
		// retry resolves it: committed tokens come back as duplicates.
		return t, fmt.Errorf("commit: %w", err)
	}
	p.committed()
	testhook.Run(hookAfterDBCommit)
	t.processed = int64(len(fresh))
	t.dead = int64(len(dead))
	return t, nil
}

// begin starts a batch transaction; with a TransactionTimeout, one whose
// session the server ends when it sits idle in the transaction that long
// (sql/begin.sql), in the same round trip.
func (p *partition) begin(ctx context.Context) (pgx.Tx, error) {
	var opts pgx.TxOptions
	if p.c.cfg.TransactionTimeout > 0 {
		opts.BeginQuery = p.c.sql.Begin
	}
	tx, err := p.c.cfg.Pool.BeginTx(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	return tx, nil
}

// careful settles items one savepoint at a time. It stops before a message
// whose handler failed and may be retried, committing what came before it.
func (p *partition) careful(ctx context.Context, items []*item) (_ int, t tally, err error) {
	if p.c.tracer != nil {
		defer func() {
			cause := err
			if errors.As(cause, new(*handlerError)) {
				cause = nil // returned by commit: what came before it committed
			}
			endSpans(items, cause) // err itself goes back to the retry loop
		}()
	}
	cfg := &p.c.cfg
	tx, err := p.begin(ctx)
	if err != nil {
		return 0, t, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit

	commit := func(n int, cause error) (int, tally, error) {
		if err := p.settledAttempts(ctx, tx, items[:n]); err != nil {
			return 0, tally{}, err
		}
		testhook.Run(hookBeforeDBCommit)
		if err := tx.Commit(ctx); err != nil {
			return 0, tally{}, fmt.Errorf("commit: %w", err)
		}
		if n > 0 {
			p.committed()
		}
		testhook.Run(hookAfterDBCommit)
		return n, t, cause
	}
	for i, it := range items {
		if it.reason == "" && it.attempts > 0 && (it.attempts >= cfg.MaxAttempts || IsPermanent(it.err)) {
			it.reason = handlerReason(it.err)
		}
		if it.reason != "" {
			if err := p.deadLetter(ctx, tx, it); err != nil {
				return 0, t, err
			}
			t.dead++
			continue
		}
		sp, err := tx.Begin(ctx) // a savepoint
		if err != nil {
			return 0, t, fmt.Errorf("savepoint: %w", err)
		}
		c := inbox.Claimed{Outcome: inbox.Fresh}
		if !cfg.AtLeastOnce {
			if c, err = p.c.inbox.Claim(ctx, sp, it.request()); err != nil {
				return 0, t, err
			}
		}
		duplicate := c.Outcome == inbox.Duplicate
		switch {
		case duplicate && p.c.cfg.OnDuplicate == nil:
			if err := sp.Commit(ctx); err != nil {
				return 0, t, fmt.Errorf("release savepoint: %w", err)
			}
			t.duplicates++
			p.c.tracer.message(ctx, it, "duplicate")
			it.endSpan(nil)
			continue
		case c.Outcome == inbox.Conflict || c.Outcome == inbox.Expired:
			if err := sp.Rollback(ctx); err != nil {
				return 0, t, fmt.Errorf("rollback to savepoint: %w", err)
			}
			it.reason, it.err = ReasonTokenConflict, conflictError(it, c)
			if c.Outcome == inbox.Expired {
				it.reason, it.err = ReasonTokenExpired, expiredError(it)
			}
			if err := p.deadLetter(ctx, tx, it); err != nil {
				return 0, t, err
			}
			t.dead++
			continue
		case !duplicate && c.Outcome != inbox.Fresh:
			return 0, t, fmt.Errorf("inbox: claim of %s: unknown outcome %v", it.token, c.Outcome)
		}
		var herr error
		if duplicate {
			p.c.tracer.message(ctx, it, "duplicate")
			herr = p.onDuplicate(ctx, sp, it, c.Stored)
		} else {
			p.c.tracer.message(ctx, it, "fresh")
			herr = p.c.handle(ctx, sp, []Message{p.message(it)})
		}
		if herr != nil {
			var he *handlerError
			if errors.As(herr, &he) {
				it.endSpan(he.err)
			} else {
				it.endSpan(herr)
			}
		}
		if herr == nil {
			if err := sp.Commit(ctx); err != nil {
				return 0, t, fmt.Errorf("release savepoint: %w", err)
			}
			if duplicate {
				t.duplicates++
			} else {
				t.processed++
			}
			continue
		}
		if err := sp.Rollback(ctx); err != nil {
			// The connection is gone: nothing of this transaction counts.
			return 0, t, fmt.Errorf("rollback to savepoint after handler error (%w): %w", herr, err)
		}
		var he *handlerError
		if !errors.As(herr, &he) {
			he = &handlerError{err: herr}
		}
		if isTransient(he.err) {
			return 0, t, he.err
		}
		it.attempts++
		it.err = he.err
		if it.attempts >= cfg.MaxAttempts || IsPermanent(he.err) {
			it.reason = handlerReason(he.err)
			if err := p.deadLetter(ctx, tx, it); err != nil {
				return 0, t, err
			}
			t.dead++
			continue
		}
		he.index = i
		return commit(i, he)
	}
	return commit(len(items), nil)
}

// duplicate is a message of a batch whose token an earlier delivery
// claimed, and the result that delivery stored.
type duplicate struct {
	index  int
	stored []byte
}

// onDuplicate calls Config.OnDuplicate for it, whose token an earlier
// delivery claimed and stored result with, recovering a panic.
func (p *partition) onDuplicate(ctx context.Context, tx pgx.Tx, it *item, stored []byte) error {
	m := p.message(it)
	if it.span != nil {
		ctx = trace.ContextWithSpan(ctx, it.span)
	}
	return callSafely(func() error { return p.c.cfg.OnDuplicate(ctx, tx, m, stored) })
}

// claimBatch claims the tokens of reqs in the inbox, or, with
// Config.AtLeastOnce, treats every message as fresh.
func (p *partition) claimBatch(ctx context.Context, tx pgx.Tx, reqs []inbox.Request) ([]inbox.Claimed, error) {
	if !p.c.cfg.AtLeastOnce {
		return p.c.inbox.ClaimBatch(ctx, tx, reqs)
	}
	claims := make([]inbox.Claimed, len(reqs))
	for i := range claims {
		claims[i].Outcome = inbox.Fresh
	}
	return claims, nil
}

func handlerReason(err error) string {
	switch {
	case errors.Is(err, ErrUndecodable):
		return ReasonUndecodable
	case IsPermanent(err):
		return ReasonPermanent
	}
	return ReasonHandlerError
}

func expiredError(it *item) error {
	return fmt.Errorf("token %s is a UUIDv7 older than the inbox keeps tokens (below its floor) and is not in the inbox: its record may have been dropped after it was applied, so it is not applied again", it.token)
}

func conflictError(it *item, c inbox.Claimed) error {
	when := "earlier in the same batch"
	if !c.ProcessedAt.IsZero() {
		when = "at " + c.ProcessedAt.Format(time.RFC3339)
	}
	return fmt.Errorf("token %s was first used at %s/%d/%d (%s) for a different payload",
		it.token, c.FirstSeen.Topic, c.FirstSeen.Partition, c.FirstSeen.Offset, when)
}

// deadLetter records it in the dead-letter table, in tx. Whatever a producer
// sent must get there, or the partition could never move past it: header keys
// that text cannot hold (NUL, invalid UTF-8) are kept as bytes beside an
// escaped copy, and error texts are escaped. Should Postgres still refuse the
// row for its content, a row without the headers is stored instead, with the
// refusal in its error text; only a transient failure is returned.
func (p *partition) deadLetter(ctx context.Context, tx pgx.Tx, it *item) error {
	if p.c.tracer != nil {
		it.endSpan(nil)
		ctx = p.c.tracer.message(ctx, it, "dead_lettered")
		it.span.SetAttributes(AttrDeadLetterReason.String(it.reason))
		it.span.AddEvent(EventDeadLettered)
		defer it.endSpan(fmt.Errorf("dead-lettered (%s): %w", it.reason, it.err))
	}
	var token *string
	if !it.token.IsZero() {
		s := it.token.String() // valid UTF-8 without NUL, whatever the token's bytes
		token = &s
	}
	keys := make([]string, len(it.msg.Headers))
	values := make([][]byte, len(it.msg.Headers))
	escaped := false
	for i, h := range it.msg.Headers {
		keys[i], values[i] = storableText(h.Key), h.Value
		escaped = escaped || keys[i] != h.Key
	}
	var rawKeys [][]byte // nil unless a key is not storable as text
	if escaped {
		rawKeys = make([][]byte, len(it.msg.Headers))
		for i, h := range it.msg.Headers {
			rawKeys[i] = []byte(h.Key)
		}
	}
	var msgTime *time.Time
	if !it.msg.Time.IsZero() {
		msgTime = &it.msg.Time
	}
	errText := "unknown"
	if it.err != nil {
		errText = storableText(it.err.Error())
	}
	insert := func(keys []string, values, rawKeys [][]byte, errText string) error {
		sp, err := tx.Begin(ctx) // a savepoint, so that a refused row leaves tx usable
		if err != nil {
			return err
		}
		if _, err := sp.Exec(ctx, p.c.sql.DeadLetter, p.c.cfg.Inbox.Scope, token, it.reason, errText, it.attempts,
			it.msg.Topic, it.msg.Partition, it.msg.Offset, it.msg.Key, it.msg.Value, keys, values, msgTime, rawKeys); err != nil {
			_ = sp.Rollback(ctx)
			return err
		}
		return sp.Commit(ctx)
	}
	err := insert(keys, values, rawKeys, errText)
	var pgErr *pgconn.PgError
	if err != nil && errors.As(err, &pgErr) && !isTransient(pgErr) {
		p.log.ErrorContext(ctx, "dead letter refused by Postgres; storing it without its headers", "offset", it.msg.Offset, "reason", it.reason, "err", err)
		errText = storableText(fmt.Sprintf("%s (headers not stored: Postgres refused the row: %s)", errText, pgErr.Message))
		err = insert([]string{}, [][]byte{}, nil, errText)
	}
	if err != nil {
		return fmt.Errorf("dead-letter %s/%d/%d: %w", it.msg.Topic, it.msg.Partition, it.msg.Offset, err)
	}
	p.log.WarnContext(ctx, "message dead-lettered", "offset", it.msg.Offset, "reason", it.reason, "attempts", it.attempts, "err", errText)
	return nil
}

// storableText returns s if a Postgres text value can hold it, or else s
// with each NUL and each byte that is not valid UTF-8 written as \xNN.
func storableText(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1, r == 0:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
