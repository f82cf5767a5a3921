package consumer_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/kafkatest"
)

// uuidV7At returns a UUIDv7 of time tm in canonical form.
func uuidV7At(tm time.Time) string {
	var u [16]byte
	_, _ = rand.Read(u[:])
	ms := tm.UnixMilli()
	for i := range 6 {
		u[i] = byte(ms >> (40 - 8*i))
	}
	u[6] = 0x70 | u[6]&0x0f
	u[8] = 0x80 | u[8]&0x3f
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// TestPartitionedInboxExpired: with a partitioned inbox, messages whose
// UUIDv7 token's partition was dropped are dead-lettered as token_expired,
// never applied again; so is a new message whose token is below the floor.
// The handler fails once in the second round, so the expired messages go
// through both the batch claim and the one-at-a-time claim under savepoints.
func TestPartitionedInboxExpired(t *testing.T) {
	t.Parallel()
	b := setupWith(t, 1, func(c *consumer.Config) { c.Inbox.Layout = inbox.LayoutPartitioned })
	ctx := context.Background()
	now := time.Now()
	tomorrow := now.UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
	hdr := func(tok string) []kafka.Header { return []kafka.Header{{Key: "Idempotency-Key", Value: []byte(tok)}} }
	msg := func(i int, tok string) kafka.Message {
		return kafka.Message{Key: []byte("k"), Value: []byte(fmt.Sprint(i)), Headers: hdr(tok)}
	}
	var round1 []kafka.Message
	for i := range 20 {
		round1 = append(round1, msg(i, uuidV7At(now)))
	}
	round1 = append(round1, msg(20, "text-token"), msg(21, uuidV7At(tomorrow.Add(time.Hour))))
	kafkatest.Produce(t, b.writer, round1...)

	var failedOnce atomic.Bool
	last := "never"
	h := consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		if m.Token.String() == last && failedOnce.CompareAndSwap(false, true) {
			return errors.New("fails once")
		}
		return insertEffect(b.effects)(ctx, tx, m)
	})
	c, err := consumer.New(b.cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, c)
	waitCommitted(t, b, int64(len(round1)))
	stop()

	store, err := inbox.New(b.pool, inbox.Config{Schema: b.schema, Layout: inbox.LayoutPartitioned})
	if err != nil {
		t.Fatal(err)
	}
	if ch, err := store.DropPartitions(ctx, tomorrow); err != nil || len(ch.Dropped) != 1 {
		t.Fatalf("DropPartitions: %+v, %v", ch, err)
	}

	// Round 2: five redeliveries of dropped tokens, a new token below the
	// floor, the text token again, a new token above the floor, and last
	// the one that fails once.
	round2 := append([]kafka.Message{}, round1[:5]...)
	round2 = append(round2, msg(30, uuidV7At(now)), round1[20], msg(31, uuidV7At(tomorrow.Add(2*time.Hour))))
	last = uuidV7At(tomorrow.Add(3 * time.Hour))
	round2 = append(round2, msg(32, last))
	kafkatest.Produce(t, b.writer, round2...)
	c, err = consumer.New(b.cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	waitCommitted(t, b, int64(len(round1)+len(round2)))

	var n int
	if err := b.pool.QueryRow(ctx, "SELECT count(*) FROM "+b.effects).Scan(&n); err != nil || n != len(round1)+2 {
		t.Fatalf("effects: %d (%v), want %d: round 1 and the two tokens above the floor", n, err, len(round1)+2)
	}
	if !failedOnce.Load() {
		t.Fatal("the handler never failed: the one-at-a-time path was not taken")
	}
	dl := deadLetters(t, b)
	expired := 0
	for k, v := range dl {
		if !strings.HasPrefix(v, consumer.ReasonTokenExpired+":0:") {
			t.Errorf("dead letter %s: %s, want %s", k, v, consumer.ReasonTokenExpired)
		}
		expired++
	}
	if expired != 6 {
		t.Fatalf("dead letters %v, want 6 expired (5 redeliveries and a new token below the floor)", dl)
	}
}

// TestBackgroundMaintenance: a running consumer creates the partitions of
// the coming days, drops those older than InboxRetention (a token of which
// is then Expired), and deletes dead letters resolved longer ago than
// DeadLetterRetention, keeping unresolved and recently resolved ones.
func TestBackgroundMaintenance(t *testing.T) {
	t.Parallel()
	b := setupWith(t, 1, func(c *consumer.Config) {
		c.Inbox.Layout = inbox.LayoutPartitioned
		c.InboxRetention = 24 * time.Hour
		c.DeadLetterRetention = 24 * time.Hour
		c.MaintenanceInterval = 50 * time.Millisecond
		c.PruneBatchSize = 1
	})
	ctx := context.Background()
	store, err := inbox.New(b.pool, inbox.Config{Schema: b.schema, Layout: inbox.LayoutPartitioned, Scope: b.cfg.GroupID})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := store.Partitions(ctx)
	if err != nil || len(ps) != 1+inbox.PartitionsAheadDefault {
		t.Fatalf("after Migrate: %v, %v", ps, err)
	}
	// A partition three days old holding a token, and the last partition
	// ahead missing.
	today := ps[0].From
	old := today.Add(-3 * 24 * time.Hour)
	parent := pgx.Identifier{b.schema, "inbox"}.Sanitize()
	for _, stmt := range []string{
		"DROP TABLE " + pgx.Identifier{b.schema, ps[len(ps)-1].Name}.Sanitize(),
		fmt.Sprintf(`CREATE TABLE %s PARTITION OF %s FOR VALUES FROM ('\x00%012x') TO ('\x00%012x')`,
			pgx.Identifier{b.schema, "inbox_p" + old.Format("20060102_1504")}.Sanitize(), parent, old.UnixMilli(), old.Add(24*time.Hour).UnixMilli()),
	} {
		if _, err := b.pool.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := inbox.ParseToken(uuidV7At(old.Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	claim := func() inbox.Outcome {
		t.Helper()
		var got inbox.Claimed
		err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) (err error) {
			got, err = store.Claim(ctx, tx, inbox.Request{Token: tok})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return got.Outcome
	}
	if got := claim(); got != inbox.Fresh {
		t.Fatalf("claim in the old partition: %v", got)
	}
	dl := pgx.Identifier{b.schema, "dead_letters"}.Sanitize()
	if _, err := b.pool.Exec(ctx, `INSERT INTO `+dl+` (scope, reason, error, attempts, kafka_topic, kafka_partition, kafka_offset, created_at, resolved_at, resolution)
		VALUES ($1, 'handler_error', 'e', 5, 't', 0, 1, now() - interval '3 days', now() - interval '2 days', 'discarded'),
		       ($1, 'handler_error', 'e', 5, 't', 0, 2, now() - interval '3 days', now() - interval '2 days', 'replayed'),
		       ($1, 'handler_error', 'e', 5, 't', 0, 3, now() - interval '3 days', NULL, NULL),
		       ($1, 'handler_error', 'e', 5, 't', 0, 4, now() - interval '3 days', now() - interval '1 hour', 'discarded'),
		       ('another-group', 'handler_error', 'e', 5, 't', 0, 5, now() - interval '3 days', now() - interval '2 days', 'discarded')`, b.cfg.GroupID); err != nil {
		t.Fatal(err)
	}

	c, err := consumer.New(b.cfg, insertEffect(b.effects))
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ps, err := store.Partitions(ctx)
		var kept []int64
		rows, qerr := b.pool.Query(ctx, "SELECT kafka_offset FROM "+dl+" ORDER BY 1")
		if qerr == nil {
			kept, qerr = pgx.CollectRows(rows, pgx.RowTo[int64])
		}
		if err == nil && qerr == nil && len(ps) == 1+inbox.PartitionsAheadDefault && ps[0].From.Equal(today) &&
			fmt.Sprint(kept) == "[3 4 5]" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("maintenance did not converge: partitions %v (%v), dead letters kept %v (%v)", ps, err, kept, qerr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := claim(); got != inbox.Expired {
		t.Fatalf("the token of the dropped partition: %v, want expired", got)
	}
}
