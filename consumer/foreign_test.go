package consumer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/metrictest"
	"github.com/exactlyhq/exactly/internal/testhook"
)

// TestUnstorableDeadLetters: whatever bytes a producer puts in header keys,
// tokens or error texts, the message reaches the dead-letter table and the
// partition moves on. (A NUL or invalid UTF-8 in a text column made the
// dead-letter INSERT fail, which was retried as an outage forever.)
func TestUnstorableDeadLetters(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	good := msgs("g", 300, 7)
	hdr := func(tok string) []kafka.Header { return []kafka.Header{{Key: "Idempotency-Key", Value: []byte(tok)}} }
	foreign := []kafka.Message{
		{Key: []byte("f"), Value: []byte("nul key"), Headers: []kafka.Header{{Key: "trace\x00id", Value: []byte("1")}}},       // no token, NUL in a header key
		{Key: []byte("f"), Value: []byte("bad utf-8 key"), Headers: []kafka.Header{{Key: "\xff\xfekey", Value: []byte("2")}}}, // no token, invalid UTF-8 key
		{Key: []byte("f"), Value: []byte("nul in error"), Headers: hdr("err-nul")},                                            // handler error with a NUL
		{Key: []byte("f"), Value: []byte("odd token"), Headers: hdr("tok\x00\xffen")},                                         // token with NUL and bad bytes, handler fails
	}
	all := append(append(append([]kafka.Message{}, good[:28]...), foreign...), good[28:]...)
	kafkatest.Produce(t, b.writer, all...)
	apply := insertEffect(b.effects)
	c, err := consumer.New(b.cfg, consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		switch string(m.Value) {
		case "nul in error":
			return consumer.Permanent(errors.New("cannot parse \x00 here \xc3"))
		case "odd token":
			return consumer.Permanent(errors.New("refused"))
		}
		return apply(ctx, tx, m)
	}))
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	waitCommitted(t, b, int64(len(all)))
	checkEffects(t, b, len(good))

	rows, err := b.pool.Query(context.Background(), "SELECT kafka_offset, reason, error, coalesce(token, ''), header_keys, header_keys_raw FROM "+
		pgx.Identifier{b.schema, "dead_letters"}.Sanitize()+" ORDER BY kafka_offset")
	if err != nil {
		t.Fatal(err)
	}
	type dl struct {
		offset         int64
		reason, errMsg string
		token          string
		keys           []string
		raw            [][]byte
	}
	var got []dl
	var d dl
	if _, err := pgx.ForEachRow(rows, []any{&d.offset, &d.reason, &d.errMsg, &d.token, &d.keys, &d.raw}, func() error {
		got = append(got, d)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("dead letters: %+v, want 4", got)
	}
	for i, want := range []struct {
		reason, keyText, rawKey, errPart, token string
	}{
		{consumer.ReasonNoToken, `trace\x00id`, "trace\x00id", "", ""},
		{consumer.ReasonNoToken, `\xff\xfekey`, "\xff\xfekey", "", ""},
		{consumer.ReasonPermanent, "Idempotency-Key", "", `cannot parse \x00 here \xc3`, "err-nul"},
		{consumer.ReasonPermanent, "Idempotency-Key", "", "refused", "tok"}, // rendered by Token.String
	} {
		g := got[i]
		if g.offset != int64(28+i) || g.reason != want.reason || len(g.keys) != 1 || g.keys[0] != want.keyText ||
			!strings.Contains(g.errMsg, want.errPart) || !strings.Contains(g.token, want.token) {
			t.Errorf("dead letter %d: %+v, want %+v", i, g, want)
		}
		switch {
		case want.rawKey == "" && g.raw != nil:
			t.Errorf("dead letter %d: raw header keys %q stored for text keys", i, g.raw)
		case want.rawKey != "" && (len(g.raw) != 1 || !bytes.Equal(g.raw[0], []byte(want.rawKey))):
			t.Errorf("dead letter %d: raw header keys %q, want %q", i, g.raw, want.rawKey)
		}
	}
}

// TestTransactionalProducer: records of aborted transactions are never
// applied (read committed, the default), transaction markers never reach a
// handler or the dead-letter table in either isolation level, and the
// committed offset passes the markers to the end of the log.
func TestTransactionalProducer(t *testing.T) {
	t.Parallel()
	var ops []string
	for i := range 12 {
		ops = append(ops, "plain:2", fmt.Sprintf("commit:%d", 5+i), fmt.Sprintf("abort:%d", 9+i))
	}
	ops = append(ops, "commit:3") // the log ends with a commit marker
	for _, uncommitted := range []bool{false, true} {
		t.Run(fmt.Sprintf("read_uncommitted=%v", uncommitted), func(t *testing.T) {
			t.Parallel()
			b := setup(t, 1)
			b.cfg.ReadUncommitted = uncommitted
			kafkatest.ProduceTransactions(t, b.topic, "tx", ops...)
			end := kafkatest.EndOffset(t, b.topic, 0)

			c, err := consumer.New(b.cfg, insertEffect(b.effects))
			if err != nil {
				t.Fatal(err)
			}
			start(t, c)
			waitCommitted(t, b, end)

			counts := map[string]int{}
			rows, err := b.pool.Query(context.Background(), "SELECT value, count(*) FROM "+b.effects+" GROUP BY value")
			if err != nil {
				t.Fatal(err)
			}
			var kind string
			var n int
			if _, err := pgx.ForEachRow(rows, []any{&kind, &n}, func() error { counts[kind] = n; return nil }); err != nil {
				t.Fatal(err)
			}
			want := map[string]int{"plain": 24, "commit": 5*12 + 66 + 3}
			if uncommitted {
				want["abort"] = 9*12 + 66
			}
			if !maps.Equal(counts, want) {
				t.Errorf("effects by kind: %v, want %v", counts, want)
			}
			var total int
			checkEffectsOnce(t, b, &total)
			if dl := deadLetters(t, b); len(dl) != 0 {
				t.Errorf("dead letters: %v, want none (transaction markers are not messages)", dl)
			}
			if got := committed(t, b.cfg.GroupID, b.topic); got != end {
				t.Errorf("committed offset %d, want the log end %d", got, end)
			}
		})
	}
}

// TestStartAtLastOffsetWithOpenTransaction: a new group told to start at the
// end starts at the last stable offset under read committed, not at the high
// watermark, so the records of a transaction open at that moment and
// committed later are applied. (Starting at the high watermark skipped them
// for good: committed records a read-committed consumer never saw.)
func TestStartAtLastOffsetWithOpenTransaction(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.cfg.StartOffset = kafka.LastOffset
	kafkatest.ProduceTransactions(t, b.topic, "before", "plain:4") // before the start: not applied
	commit := kafkatest.HoldTransaction(t, b.topic, "open", 5)

	resolved := make(chan struct{})
	var once sync.Once
	testhook.Set("consumer.start-resolved", func() { once.Do(func() { close(resolved) }) })
	t.Cleanup(func() { testhook.Set("consumer.start-resolved", nil) })
	c, err := consumer.New(b.cfg, insertEffect(b.effects))
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	select {
	case <-resolved:
	case <-time.After(time.Minute):
		t.Fatal("the consumer did not resolve its start offset")
	}
	commit()
	kafkatest.ProduceTransactions(t, b.topic, "after", "plain:3")
	waitCommitted(t, b, kafkatest.EndOffset(t, b.topic, 0))

	var total int
	checkEffectsOnce(t, b, &total)
	var open, after, before int
	if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FILTER (WHERE token LIKE 'open-%'), count(*) FILTER (WHERE token LIKE 'after-%'), count(*) FILTER (WHERE token LIKE 'before-%') FROM "+b.effects).Scan(&open, &after, &before); err != nil {
		t.Fatal(err)
	}
	if open != 5 || after != 3 || before != 0 {
		t.Errorf("applied %d of the open transaction's 5 records, %d of the 3 after, %d of the 4 before; want 5, 3, 0", open, after, before)
	}
}

// checkEffectsOnce asserts no token was applied twice and returns the count.
func checkEffectsOnce(t *testing.T, b bundle, total *int) {
	t.Helper()
	var distinct int
	if err := b.pool.QueryRow(context.Background(), "SELECT count(*), count(DISTINCT token) FROM "+b.effects).Scan(total, &distinct); err != nil {
		t.Fatal(err)
	}
	if *total != distinct {
		t.Fatalf("effects: %d rows for %d distinct tokens", *total, distinct)
	}
}

// TestRetentionSkip: messages Kafka deleted before the group processed them
// are counted in MetricSkipped (and logged at warn with the range), and the
// partition goes on from the log start.
func TestRetentionSkip(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	mp := metrictest.NewProvider()
	b.cfg.MeterProvider = mp
	all := msgs("r", 100, 5)
	kafkatest.Produce(t, b.writer, all[:20]...)
	c, err := consumer.New(b.cfg, insertEffect(b.effects))
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, c)
	waitCommitted(t, b, 20)
	stop()

	kafkatest.Produce(t, b.writer, all[20:]...)
	kafkatest.DeleteRecords(t, b.topic, 0, 60) // offsets 20..59 were never processed
	stop = start(t, c)
	waitCommitted(t, b, 100)
	stop()

	var n int
	if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+b.effects+" WHERE kafka_offset BETWEEN 20 AND 59").Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d effects of deleted offsets (err %v)", n, err)
	}
	var total int
	checkEffectsOnce(t, b, &total)
	if total != 60 {
		t.Errorf("%d effects, want 60 (0..19 and 60..99)", total)
	}
	counts, _, _ := collect(t, mp)
	if got := counts[consumer.MetricSkipped]; got != 40 {
		t.Errorf("%s = %d, want 40", consumer.MetricSkipped, got)
	}
}
