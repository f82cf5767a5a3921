package deadletter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/outbox"
)

// Resolution is what an operator did with a dead letter.
type Resolution string

const (
	Replayed  Resolution = "replayed"  // enqueued into the outbox again
	Discarded Resolution = "discarded" // never to be published
)

// CheckShards refuses Config.Shards smaller than the writers'
// outbox.Config.Shards, as far as the rows in the outbox tell: a replay
// would put a key in another shard than its other rows, and two relays
// could publish the key at once, out of order. Callers check before a
// replay.
func (s *Store) CheckShards(ctx context.Context) error {
	var highest int
	if err := s.db.QueryRow(ctx, s.sql.MaxShard).Scan(&highest); err != nil {
		return err
	}
	if highest >= s.cfg.Shards {
		return fmt.Errorf("the outbox holds rows in shard %d, but %s is %d: pass %s as the writers' outbox.Config.Shards",
			highest, s.cfg.ShardsSetting, s.cfg.Shards, s.cfg.ShardsSetting)
	}
	return nil
}

// lockReplays serializes replays and discards into the outbox table, for
// the rest of tx: across the CLI and consoles, one at a time per table.
func (s *Store) lockReplays(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, s.sql.ReplayLock, s.cfg.Schema+"."+s.cfg.OutboxTable)
	return err
}

// ResolveConsumer replays or discards the consumer dead letter id in a
// transaction of its own, and reports whether it found it unresolved. A
// replay enqueues the message into the outbox in the transaction that marks
// the dead letter replayed, so a second replay, from anywhere, enqueues
// nothing.
func (s *Store) ResolveConsumer(ctx context.Context, id int64, r Resolution) (bool, error) {
	if r != Replayed && r != Discarded {
		return false, fmt.Errorf("unknown resolution %q", r)
	}
	found := false
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var m outbox.Message
		var keys []string
		var values [][]byte
		var d struct {
			partition int
			offset    int64
			reason    string
		}
		if err := s.lockReplays(ctx, tx); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, s.sql.ConsumerLock, id).Scan(&m.Topic, &m.Key, &m.Value, &keys, &values, &d.partition, &d.offset, &d.reason)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // resolved meanwhile
		}
		if err != nil {
			return err
		}
		found = true
		if r == Replayed {
			m.Headers, m.ID = ReplayHeaders(keys, values, d.reason, m.Topic, d.partition, d.offset)
			if _, err := s.ob.EnqueueTx(ctx, tx, m); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, s.sql.ConsumerResolve, id, string(r))
		return err
	})
	return found, err
}

// ResolveOutbox replays or discards the outbox dead letter id in a
// transaction of its own, and reports whether it found it unresolved. A
// replay enqueues the message again with its original message id, so a
// consumer that received an earlier attempt skips it.
func (s *Store) ResolveOutbox(ctx context.Context, id int64, r Resolution) (bool, error) {
	if r != Replayed && r != Discarded {
		return false, fmt.Errorf("unknown resolution %q", r)
	}
	found := false
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if err := s.lockReplays(ctx, tx); err != nil {
			return err
		}
		var m outbox.Message
		var headers []byte
		var shard int
		err := tx.QueryRow(ctx, s.sql.OutboxLock, id).Scan(&m.ID, &m.Topic, &m.Key, &m.Value, &headers, &shard)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // resolved meanwhile
		}
		if err != nil {
			return err
		}
		found = true
		if r == Replayed {
			// A key must go back to the shard its later rows are in, or two
			// relays could publish the key at once, out of order.
			if sh := s.ob.Config().ShardOf(m.Key, m.ID); len(m.Key) > 0 && sh != shard {
				return fmt.Errorf("its key was in shard %d, but %s %d puts it in shard %d: pass %s as the writers' outbox.Config.Shards",
					shard, s.cfg.ShardsSetting, s.cfg.Shards, sh, s.cfg.ShardsSetting)
			}
			var hs []Header
			if err := json.Unmarshal(headers, &hs); err != nil {
				return fmt.Errorf("headers: %w", err)
			}
			for _, h := range hs {
				m.Headers = append(m.Headers, kafka.Header{Key: h.Key, Value: h.Value})
				if h.Key == exactly.Header {
					m.ID = "" // the application's own token travels in its header
				}
			}
			if _, err := s.ob.EnqueueTx(ctx, tx, m); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, s.sql.OutboxResolve, id, string(r))
		return err
	})
	return found, err
}

// ReplayHeaders returns the headers and outbox message id of a consumer
// dead letter's replay. The replay carries one token, in one header spelled
// exactly as exactly.Header (the relay adds its own header beside any other
// spelling, and consumers refuse a message with two):
//
//   - The message's own token when it had a usable one: its single token
//     header (in any case), or the first of repeated ones in a dead letter
//     whose reason says the consumer found a token (written before repeated
//     headers were refused, when consumers read the first). Groups that
//     processed the original skip the replay.
//   - Otherwise (no_token, invalid_token: none, an empty one, one too long,
//     repeated), none of its token headers: the replay gets an id derived
//     from where the message was first read ([ReplayID]), which the relay
//     sends as its token, so that replays of one Kafka message from the
//     dead letters of several groups carry one token.
func ReplayHeaders(keys []string, values [][]byte, reason, topic string, partition int, offset int64) ([]kafka.Header, string) {
	var tokens []int
	for i, k := range keys {
		if strings.EqualFold(k, exactly.Header) {
			tokens = append(tokens, i)
		}
	}
	keep := -1
	tokenless := reason == consumer.ReasonNoToken || reason == consumer.ReasonInvalidToken
	if len(tokens) == 1 || len(tokens) > 1 && !tokenless {
		if _, err := inbox.ParseToken(string(values[tokens[0]])); err == nil {
			keep = tokens[0]
		}
	}
	var hs []kafka.Header
	for i, k := range keys {
		switch {
		case i == keep:
			hs = append(hs, kafka.Header{Key: exactly.Header, Value: values[i]})
		case !slices.Contains(tokens, i):
			hs = append(hs, kafka.Header{Key: k, Value: values[i]})
		}
	}
	if keep >= 0 {
		return hs, ""
	}
	return hs, ReplayID(topic, partition, offset)
}

// ReplayID is a UUID (version 8, RFC 9562) derived from a Kafka message's
// coordinates.
func ReplayID(topic string, partition int, offset int64) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "exactly-replay\x00%s\x00%d\x00%d", topic, partition, offset))
	sum[6] = sum[6]&0x0f | 0x80
	sum[8] = sum[8]&0x3f | 0x80
	h := hex.EncodeToString(sum[:16])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Kind is which dead letters: a consumer's or the outbox's.
type Kind string

const (
	ConsumerKind Kind = "consumer" // of the consumers: messages their handlers could not process
	OutboxKind   Kind = "outbox"   // of the outbox: committed messages Kafka rejected
)

// Select returns the ids of the unresolved dead letters of kind k that f
// selects, oldest first: the order a replay resolves them in.
func (s *Store) Select(ctx context.Context, k Kind, f Filter) ([]int64, error) {
	f.State, f.NewestFirst = Unresolved, false
	var ids []int64
	switch k {
	case ConsumerKind:
		dls, err := s.ConsumerList(ctx, f)
		for _, d := range dls {
			ids = append(ids, d.ID)
		}
		return ids, err
	case OutboxKind:
		dls, err := s.OutboxList(ctx, f)
		for _, d := range dls {
			ids = append(ids, d.ID)
		}
		return ids, err
	}
	return nil, fmt.Errorf("unknown kind of dead letters %q", k)
}

// ResolveAll replays or discards the dead letters ids of kind k, one
// transaction each, in order, and returns those it found unresolved. It
// stops at the first error, which names the dead letter; done holds those
// resolved before it. Replays check the shards first ([Store.CheckShards]).
func (s *Store) ResolveAll(ctx context.Context, k Kind, ids []int64, r Resolution) (done []int64, err error) {
	resolve := s.ResolveConsumer
	switch k {
	case ConsumerKind:
	case OutboxKind:
		resolve = s.ResolveOutbox
	default:
		return nil, fmt.Errorf("unknown kind of dead letters %q", k)
	}
	if r == Replayed {
		if err := s.CheckShards(ctx); err != nil {
			return nil, err
		}
	}
	done = []int64{}
	for _, id := range ids {
		ok, err := resolve(ctx, id, r)
		if err != nil {
			return done, fmt.Errorf("dead letter %d: %w (%d resolved before it)", id, err, len(done))
		}
		if ok {
			done = append(done, id)
		}
	}
	return done, nil
}
