package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/internal/kafkatest"
)

// TestStoredResultOnDuplicate: a handler stores a result with the token; a
// duplicate delivery hands it to OnDuplicate, in a transaction (here the
// callback writes a "reply" row, as it would enqueue a reply through the
// outbox). A message whose first delivery was dead-lettered claimed no
// token, so its next delivery is handled again and never reaches
// OnDuplicate with a result.
func TestStoredResultOnDuplicate(t *testing.T) {
	t.Parallel()
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			t.Parallel()
			b := setup(t, 1)
			if _, err := b.pool.Exec(context.Background(), "CREATE TABLE "+pgx.Identifier{b.schema, "replies"}.Sanitize()+" (token text, stored text)"); err != nil {
				t.Fatal(err)
			}
			hdr := func(tok string) []kafka.Header { return []kafka.Header{{Key: "Idempotency-Key", Value: []byte(tok)}} }
			var first []kafka.Message
			for i := range 10 {
				v := "ok"
				if i == 3 {
					v = "fail"
				}
				first = append(first, kafka.Message{Key: []byte("k"), Value: []byte(v), Headers: hdr(fmt.Sprintf("r-%d", i))})
			}
			kafkatest.Produce(t, b.writer, first...)
			kafkatest.Produce(t, b.writer, first...) // every message again

			apply := insertEffect(b.effects)
			one := func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
				if string(m.Value) == "fail" {
					return consumer.Permanent(errors.New("refused"))
				}
				if err := apply(ctx, tx, m); err != nil {
					return err
				}
				return m.SetResult(ctx, tx, []byte("reply:"+m.Token.String()))
			}
			var mu sync.Mutex
			calls := map[string]string{}
			b.cfg.OnDuplicate = func(ctx context.Context, tx pgx.Tx, m consumer.Message, stored []byte) error {
				mu.Lock()
				calls[m.Token.String()] = string(stored)
				mu.Unlock()
				_, err := tx.Exec(ctx, "INSERT INTO "+pgx.Identifier{b.schema, "replies"}.Sanitize()+" VALUES ($1, $2)", m.Token.String(), string(stored))
				return err
			}
			var c *consumer.Consumer
			var err error
			if batch {
				c, err = consumer.NewBatch(b.cfg, consumer.BatchHandlerFunc(func(ctx context.Context, tx pgx.Tx, ms []consumer.Message) error {
					for _, m := range ms {
						if err := one(ctx, tx, m); err != nil {
							return err
						}
					}
					return nil
				}))
			} else {
				c, err = consumer.New(b.cfg, consumer.HandlerFunc(one))
			}
			if err != nil {
				t.Fatal(err)
			}
			start(t, c)
			waitCommitted(t, b, 20) // a batch holding r-3 runs one message at a time
			// The good ones a third time: a batch of duplicates only, settled
			// in one transaction (the optimistic path).
			kafkatest.Produce(t, b.writer, append(append([]kafka.Message{}, first[:3]...), first[4:]...)...)
			waitCommitted(t, b, 29)
			var total int
			if checkEffectsOnce(t, b, &total); total != 9 {
				t.Errorf("%d effects, want 9", total)
			}

			want := map[string]string{}
			for i := range 10 {
				if i != 3 {
					want[fmt.Sprintf("r-%d", i)] = fmt.Sprintf("reply:r-%d", i)
				}
			}
			mu.Lock()
			got := maps.Clone(calls)
			mu.Unlock()
			if !maps.Equal(got, want) {
				t.Errorf("OnDuplicate calls %v, want %v", got, want)
			}
			var replies int
			if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{b.schema, "replies"}.Sanitize()).Scan(&replies); err != nil || replies != 18 {
				t.Errorf("%d replies committed (err %v), want 18", replies, err)
			}
			if dl := deadLetters(t, b); len(dl) != 2 {
				t.Errorf("dead letters %v, want both deliveries of r-3", dl)
			}
		})
	}
}

// TestSetResultAtLeastOnce: without the inbox there is no token to store a
// result with, and a config asking for OnDuplicate is refused.
func TestSetResultAtLeastOnce(t *testing.T) {
	t.Parallel()
	var m consumer.Message
	if err := m.SetResult(context.Background(), nil, []byte("x")); !errors.Is(err, consumer.ErrNoInbox) {
		t.Fatalf("SetResult without an inbox: %v, want ErrNoInbox", err)
	}
	cfg := testConfig(nil, "s", "t", "g")
	cfg.AtLeastOnce = true
	cfg.OnDuplicate = func(context.Context, pgx.Tx, consumer.Message, []byte) error { return nil }
	if _, err := consumer.New(cfg, consumer.HandlerFunc(func(context.Context, pgx.Tx, consumer.Message) error { return nil })); err == nil {
		t.Fatal("New accepted AtLeastOnce with OnDuplicate")
	}
}
