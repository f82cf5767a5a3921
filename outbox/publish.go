package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/internal/testhook"
)

// Reasons recorded with an outbox dead letter.
const (
	ReasonTooLarge     = "too_large"     // the broker or writer refuses its size
	ReasonUnknownTopic = "unknown_topic" // the topic does not exist or is invalid
	ReasonRejected     = "rejected"      // another error that retrying cannot fix
)

// publisher writes one shard's messages, each write alone in its record
// batches: kafka-go batches concurrent writes to a partition together, and a
// write that shares a batch with another, or is split over two, can fail in
// part (see write). A relay that builds its writers gives each shard one;
// a writer from RelayConfig.Writer is shared by all shards, one write at a
// time.
type publisher struct {
	w  *kafka.Writer
	mu *sync.Mutex
}

// row is one outbox row being published.
type row struct {
	id        int64
	messageID string
	topic     string
	key       []byte
	value     []byte
	headers   []byte
	createdAt time.Time
}

// blockedKey is a key whose oldest row failed for a reason that retrying
// may not fix. Its later rows wait; the row is retried alone, after wait.
type blockedKey struct {
	id      int64
	wait    time.Duration
	retryAt time.Time
}

// retryBlocked publishes the head row of each blocked key whose retry is
// due, alone, and returns when the next retry is due.
func (r *Relay) retryBlocked(ctx context.Context, conn *pgx.Conn, pub publisher, blocked map[string]*blockedKey, log *slog.Logger) (time.Time, error) {
	var next time.Time
	now := time.Now()
	for k, b := range blocked {
		if b.retryAt.After(now) {
			if next.IsZero() || b.retryAt.Before(next) {
				next = b.retryAt
			}
			continue
		}
		rows, err := r.fetch(ctx, conn, r.ob.sql.FetchIDs, []int64{b.id})
		if err != nil {
			return next, err
		}
		if len(rows) == 0 { // published or dead-lettered by another relay
			delete(blocked, k)
			continue
		}
		if _, err := r.publishRows(ctx, conn, pub, rows, blocked, log); err != nil {
			return next, err
		}
		if nb, ok := blocked[k]; ok && (next.IsZero() || nb.retryAt.Before(next)) {
			next = nb.retryAt
		}
	}
	return next, nil
}

// fetchPending reads the next rows of the shard to publish through pub,
// leaving out the keys in blocked: at most BatchSize rows and no more bytes
// than one write of pub holds (or one row larger than that), so that a
// backlog of large rows costs the relay one write's worth of memory per
// shard, not BatchSize rows.
//
// fetch.sql sums, in id order, each row's key and value lengths, its
// headers' size and rowOverhead, never less than fit counts the row, and
// keeps the rows up to the writer's BatchBytes. Lengths come from the
// datums' headers (TOAST pointers too), so rows left out are not read
// whole. Stored jsonb is never smaller than the header bytes it holds, but
// compressed jsonb can be: that is measured as text. Sizes are int4, whose
// sum is int8 (a sum of int8 is numeric, much slower). Keep the query under
// track_activity_query_size (1kB): pg_stat_activity shows no more of it.
func (r *Relay) fetchPending(ctx context.Context, conn *pgx.Conn, pub publisher, shard int, blocked [][]byte) ([]row, error) {
	_, maxBytes := pub.limits()
	return r.fetch(ctx, conn, r.ob.sql.Fetch, shard, r.cfg.BatchSize, blocked, maxBytes, rowOverhead)
}

// rowOverhead is what fetch.sql adds to a row's key, value and headers: the
// per-message bytes fit counts and the message id header the relay adds.
const rowOverhead = 32 + 10 + len(exactly.Header) + 36

func (r *Relay) fetch(ctx context.Context, conn *pgx.Conn, query string, args ...any) ([]row, error) {
	rows, err := conn.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	var out []row
	var x row
	_, err = pgx.ForEachRow(rows, []any{&x.id, &x.messageID, &x.topic, &x.key, &x.value, &x.headers, &x.createdAt}, func() error {
		out = append(out, x)
		x = row{}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return out, nil
}

// publishRows publishes rows in one write and settles each in the database:
// acknowledged rows are removed (or marked), failed rows record the failure.
// It returns the error of a transient failure, after which the caller backs
// off, and an error only when the database could not record the outcome.
//
// The steps: build the messages, keep the prefix one write holds, write
// them, find which failed rows are to blame (isolateFailures), settle the
// published rows, then the failed ones.
func (r *Relay) publishRows(ctx context.Context, conn *pgx.Conn, pub publisher, rows []row, blocked map[string]*blockedKey, log *slog.Logger) (transient, err error) {
	msgs, err := kafkaMessages(rows)
	if err != nil {
		return nil, err
	}
	n := pub.fit(msgs)
	rows, msgs = rows[:n], msgs[:n] // the rest are fetched again next round
	spans := r.startSends(ctx, rows, msgs)
	errs := pub.write(ctx, msgs)
	behind := pub.isolateFailures(ctx, rows, msgs, errs)
	endSends(spans, errs)
	if err := r.settlePublished(ctx, conn, rows, errs, blocked); err != nil {
		return nil, err
	}
	return r.settleFailures(ctx, conn, rows, errs, behind, blocked, log)
}

// isolateFailures finds, in id order (rows come sorted by id), the failed
// rows that are to blame, and returns which failed rows are behind: a row
// whose key has an earlier row failing in this write keeps its error
// without counting a rejection, since it failed for sharing that row's
// write, and publishing it now would overtake that row. Kafka rejects a
// partition's whole record batch for one record too large, and kafka-go
// fails a write's other messages with an unknown topic's error, so a
// rejected row that is first of its key is published again alone, once,
// and errs[i] becomes the outcome: only the culprit counts a rejection and
// blocks its key.
func (p publisher) isolateFailures(ctx context.Context, rows []row, msgs []kafka.Message, errs []error) (behind []bool) {
	behind = make([]bool, len(rows))
	failedKey := map[string]bool{}
	for i, x := range rows {
		k := string(x.key)
		if errs[i] == nil {
			continue
		}
		if failedKey[k] {
			behind[i] = true
			continue
		}
		if len(rows) > 1 && permanentReason(errs[i]) != "" {
			errs[i] = p.write(ctx, msgs[i:i+1])[0]
		}
		failedKey[k] = errs[i] != nil
	}
	return behind
}

// settlePublished records the latency of the rows Kafka acknowledged,
// deletes them (or marks them published, with KeepPublished) and unblocks
// the keys whose blocked row was among them.
func (r *Relay) settlePublished(ctx context.Context, conn *pgx.Conn, rows []row, errs []error, blocked map[string]*blockedKey) error {
	var ids []int64
	now := time.Now()
	for i, x := range rows {
		if errs[i] == nil {
			ids = append(ids, x.id)
			r.latency.Record(ctx, now.Sub(x.createdAt).Seconds(), r.attrs)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	testhook.Run("outbox.after-publish")
	q := r.ob.sql.Delete
	if r.cfg.KeepPublished > 0 {
		q = r.ob.sql.MarkPublished
	}
	if _, err := conn.Exec(ctx, q, ids); err != nil {
		return fmt.Errorf("remove %d published rows (they will be published again): %w", len(ids), err)
	}
	r.published.Add(ctx, int64(len(ids)), r.attrs)
	for i, x := range rows {
		if errs[i] == nil && isBlockedHead(blocked, x) {
			delete(blocked, string(x.key))
		}
	}
	return nil
}

// settleFailures records every failed row's failure, then acts on each row
// to blame: a transient failure backs off, a rejection blocks the row's
// key or, the MaxRejections-th time, dead-letters the row. Rows behind
// another row of their key only record their error. It returns the last
// transient failure's error.
func (r *Relay) settleFailures(ctx context.Context, conn *pgx.Conn, rows []row, errs []error, behind []bool, blocked map[string]*blockedKey, log *slog.Logger) (transient, err error) {
	rejections, err := r.recordFailures(ctx, conn, rows, errs, behind)
	if err != nil {
		return nil, err
	}
	for i, x := range rows {
		e := errs[i]
		if e == nil || behind[i] {
			continue // published, or waiting behind its key's failing row
		}
		reason := permanentReason(e)
		if reason == "" {
			r.transientFailure(ctx, x, blocked)
			transient = e
			continue
		}
		if err := r.rejected(ctx, conn, x, e, reason, rejections[x.id], blocked, log); err != nil {
			return nil, err
		}
	}
	return transient, nil
}

// recordFailures records the error of every failed row, counting a
// rejection for the rows Kafka refused that are not behind another row of
// their key, and returns each failed row's rejections so far, by id.
func (r *Relay) recordFailures(ctx context.Context, conn *pgx.Conn, rows []row, errs []error, behind []bool) (map[int64]int, error) {
	var ids []int64
	var texts []string
	var rejected []bool
	for i, x := range rows {
		if errs[i] != nil {
			ids = append(ids, x.id)
			texts = append(texts, errs[i].Error())
			rejected = append(rejected, !behind[i] && permanentReason(errs[i]) != "")
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	rejections := map[int64]int{}
	res, err := conn.Query(ctx, r.ob.sql.RecordFailure, ids, texts, rejected)
	if err != nil {
		return nil, fmt.Errorf("record failures: %w", err)
	}
	var id int64
	var n int
	if _, err := pgx.ForEachRow(res, []any{&id, &n}, func() error { rejections[id] = n; return nil }); err != nil {
		return nil, fmt.Errorf("record failures: %w", err)
	}
	return rejections, nil
}

// transientFailure counts a failure that retrying may fix. The shard backs
// off; a blocked key's row, retried alone, backs off like it.
func (r *Relay) transientFailure(ctx context.Context, x row, blocked map[string]*blockedKey) {
	r.failures.Add(ctx, 1, r.attrs, metric.WithAttributes(attribute.String("class", "transient")))
	if isBlockedHead(blocked, x) {
		b := blocked[string(x.key)]
		b.wait = min(r.cfg.RetryMax, 2*b.wait)
		b.retryAt = time.Now().Add(b.wait)
	}
}

// rejected counts a row Kafka refused for reason, rejections times so far:
// below MaxRejections its key is blocked while the row is retried alone
// with backoff, at MaxRejections the row is dead-lettered and its key
// flows again.
func (r *Relay) rejected(ctx context.Context, conn *pgx.Conn, x row, e error, reason string, rejections int, blocked map[string]*blockedKey, log *slog.Logger) error {
	r.failures.Add(ctx, 1, r.attrs, metric.WithAttributes(attribute.String("class", "permanent")))
	if rejections >= r.cfg.MaxRejections {
		return r.deadLetter(ctx, conn, x, e, reason, rejections, blocked, log)
	}
	wait := min(r.cfg.RetryMax, r.cfg.RetryInitial<<min(rejections, 20))
	blocked[string(x.key)] = &blockedKey{id: x.id, wait: wait, retryAt: time.Now().Add(wait)}
	log.WarnContext(rowTrace(ctx, x), "outbox row rejected; its key waits while it is retried", "id", x.id, "topic", x.topic, "rejections", rejections, "max_rejections", r.cfg.MaxRejections, "retry_in", wait, "err", e)
	return nil
}

// deadLetter moves the row to the dead-letter table with its reason and
// error, and unblocks its key.
func (r *Relay) deadLetter(ctx context.Context, conn *pgx.Conn, x row, e error, reason string, rejections int, blocked map[string]*blockedKey, log *slog.Logger) error {
	if _, err := conn.Exec(ctx, r.ob.sql.DeadLetter, x.id, reason, e.Error()); err != nil {
		return fmt.Errorf("dead-letter row %d: %w", x.id, err)
	}
	r.dead.Add(ctx, 1, r.attrs)
	log.WarnContext(rowTrace(ctx, x), "outbox row dead-lettered", "id", x.id, "message_id", x.messageID, "topic", x.topic, "reason", reason, "rejections", rejections, "err", e)
	if isBlockedHead(blocked, x) {
		delete(blocked, string(x.key))
	}
	return nil
}

// isBlockedHead reports whether x is the row its blocked key waits on.
func isBlockedHead(blocked map[string]*blockedKey, x row) bool {
	b, ok := blocked[string(x.key)]
	return ok && b.id == x.id
}

// kafkaMessages returns the messages to publish for rows, each with its
// message id header.
func kafkaMessages(rows []row) ([]kafka.Message, error) {
	msgs := make([]kafka.Message, len(rows))
	for i, x := range rows {
		var hs []header
		if err := json.Unmarshal(x.headers, &hs); err != nil {
			return nil, fmt.Errorf("row %d: headers: %w", x.id, err)
		}
		kh := make([]kafka.Header, 0, len(hs)+1)
		hasID := false
		for _, h := range hs {
			kh = append(kh, kafka.Header{Key: h.Key, Value: h.Value})
			hasID = hasID || strings.EqualFold(h.Key, exactly.Header)
		}
		if !hasID {
			kh = append(kh, kafka.Header{Key: exactly.Header, Value: []byte(x.messageID)})
		}
		msgs[i] = kafka.Message{Topic: x.topic, Key: x.key, Value: x.value, Headers: kh}
	}
	return msgs, nil
}

// fit returns how many of msgs, from the first, one write may hold: kafka-go
// sends a partition's messages of one write as one record batch only up to
// the writer's BatchSize messages and BatchBytes bytes, and splits beyond.
// The parts of a split write succeed or fail on their own, so a key's later
// row could be published while its earlier row failed. For the same reason a
// write ends before a key's row for another topic than the key's earlier
// rows in it (each topic's partition is a batch of its own). The first
// message always fits (one too large for the writer is rejected on its own).
func (p publisher) fit(msgs []kafka.Message) int {
	maxMsgs, maxBytes := p.limits()
	var n int
	var bytes int64
	var topicOf map[string]string // key -> topic of its rows so far, once a write has two topics
	for ; n < len(msgs); n++ {
		m := &msgs[n]
		size := int64(32 + len(m.Key) + len(m.Value)) // at least kafka-go's estimate
		for _, h := range m.Headers {
			size += int64(10 + len(h.Key) + len(h.Value))
		}
		if n > 0 && (n >= maxMsgs || bytes+size > maxBytes) {
			break
		}
		if topicOf == nil && m.Topic != msgs[0].Topic {
			topicOf = make(map[string]string, n)
			for _, p := range msgs[:n] {
				topicOf[string(p.Key)] = p.Topic
			}
		}
		if topicOf != nil {
			if t, seen := topicOf[string(m.Key)]; seen && t != m.Topic {
				break
			}
			topicOf[string(m.Key)] = m.Topic
		}
		bytes += size
	}
	return n
}

// limits returns the most messages and bytes kafka-go puts in one record
// batch: the writer's BatchSize and BatchBytes, or kafka-go's defaults.
func (p publisher) limits() (maxMsgs int, maxBytes int64) {
	maxMsgs, maxBytes = p.w.BatchSize, p.w.BatchBytes
	if maxMsgs <= 0 {
		maxMsgs = 100 // kafka-go's defaults
	}
	if maxBytes <= 0 {
		maxBytes = 1 << 20
	}
	return maxMsgs, maxBytes
}

// write publishes msgs in one call and returns each message's error. One
// write at a time per writer: kafka-go would otherwise put messages of
// concurrent writes (of other shards) into the same record batch, where a
// rejected message fails the others, or push a write's messages into a
// second batch, which can fail while the first succeeds.
func (p publisher) write(ctx context.Context, msgs []kafka.Message) []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	errs := make([]error, len(msgs))
	werr := p.w.WriteMessages(ctx, msgs...)
	var we kafka.WriteErrors
	switch {
	case werr == nil:
	case errors.As(werr, &we) && len(we) == len(msgs):
		copy(errs, we)
	default:
		for i := range errs {
			errs[i] = werr
		}
	}
	return errs
}

// permanentReason classifies a publish error that retrying will not fix,
// or returns "" for one that it may (an unreachable broker, a leader
// election, a timeout).
func permanentReason(err error) string {
	var tooLarge kafka.MessageTooLargeError
	if errors.As(err, &tooLarge) {
		return ReasonTooLarge
	}
	var kerr kafka.Error
	if errors.As(err, &kerr) {
		switch kerr {
		case kafka.MessageSizeTooLarge, kafka.RecordListTooLarge:
			return ReasonTooLarge
		case kafka.UnknownTopicOrPartition, kafka.InvalidTopic, kafka.TopicAuthorizationFailed:
			return ReasonUnknownTopic
		case kafka.InvalidRecord, kafka.UnsupportedForMessageFormat:
			return ReasonRejected
		}
	}
	return ""
}
