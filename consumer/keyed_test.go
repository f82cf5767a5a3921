package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/proctest"
)

// TestKeyedOrderAndOnce: with KeyConcurrency, messages of different keys of
// one partition run at once, each is applied once, and each key's messages
// run in order.
func TestKeyedOrderAndOnce(t *testing.T) {
	t.Parallel()
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			t.Parallel()
			b := setup(t, 2)
			b.cfg.KeyConcurrency = 8
			b.cfg.BatchSize = 20
			const n = 3000
			kafkatest.Produce(t, b.writer, msgs("ko", n, 150)...)
			apply := insertEffect(b.effects)
			var running, most atomic.Int32
			slow := func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
				now := running.Add(1)
				defer running.Add(-1)
				for old := most.Load(); now > old && !most.CompareAndSwap(old, now); old = most.Load() {
				}
				time.Sleep(200 * time.Microsecond)
				return apply(ctx, tx, m)
			}
			c := newConsumer(t, b.cfg, batch, slow)
			start(t, c)
			waitCommitted(t, b, n)
			checkEffects(t, b, n)
			// Two partitions: more than two handlers at once means lanes.
			if most.Load() <= 2 {
				t.Errorf("at most %d handlers ran at once, want more than one per partition", most.Load())
			}
		})
	}
}

// TestKeyedPoisonKeyBlocksOnlyItsKey: a message that keeps failing holds
// its key, and only its key: every other key is applied meanwhile, the
// watermark stays before it, and once it is dead-lettered the rest of its
// key follows.
func TestKeyedPoisonKeyBlocksOnlyItsKey(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.cfg.KeyConcurrency = 4
	b.cfg.BatchSize = 10
	b.cfg.MaxAttempts = 4
	b.cfg.RetryInitial = 300 * time.Millisecond
	b.cfg.RetryMax = 300 * time.Millisecond
	const n = 400
	all := msgs("pk", n, 8) // key-3's first message is pk-3, at offset 3
	kafkatest.Produce(t, b.writer, all...)
	apply := insertEffect(b.effects)
	var failures atomic.Int32
	c, err := consumer.New(b.cfg, consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		if m.Token.String() == "pk-3" {
			failures.Add(1)
			return errors.New("always fails")
		}
		return apply(ctx, tx, m)
	}))
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	// Every other key's 350 messages are applied while key-3 waits.
	waitCount(t, b.pool, 30*time.Second, n-n/8, "SELECT count(*) FROM "+b.effects+" WHERE key <> 'key-3'")
	var key3 int
	if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+b.effects+" WHERE key = 'key-3'").Scan(&key3); err != nil {
		t.Fatal(err)
	}
	if f := failures.Load(); f >= int32(b.cfg.MaxAttempts) || key3 != 0 {
		t.Fatalf("other keys done after %d failures of pk-3 with %d of key-3 applied: want fewer than %d failures and none of key-3 (it waits behind pk-3)", f, key3, b.cfg.MaxAttempts)
	}
	if got := committed(t, b.cfg.GroupID, b.topic); got > 3 {
		t.Fatalf("committed offset %d while pk-3 (offset 3) is not settled: past the watermark", got)
	}
	waitCommitted(t, b, n)
	checkEffects(t, b, n-1)
	dl := deadLetters(t, b)
	if len(dl) != 1 || !strings.HasPrefix(dl["pk-3@3"], consumer.ReasonHandlerError+":4:") {
		t.Fatalf("dead letters %v, want pk-3@3 after 4 attempts", dl)
	}
}

// TestKeyedStuckKeyBoundsMemory: a key stuck for a long time under a steady
// stream of other keys holds at most MaxPending messages (plus one fetch)
// beyond the watermark: then fetching waits, instead of memory growing.
func TestKeyedStuckKeyBoundsMemory(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.cfg.KeyConcurrency = 4
	b.cfg.BatchSize = 10
	b.cfg.MaxPending = 200
	const n = 2000
	value := strings.Repeat("v", 16<<10) // 16 KiB: a 1 MiB fetch holds some 60
	stuck := make(chan struct{})
	var handled atomic.Int32
	c, err := consumer.New(b.cfg, consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		if string(m.Key) == "stuck" {
			select {
			case <-stuck:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		handled.Add(1)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release := func() { once.Do(func() { close(stuck) }) }
	t.Cleanup(release)
	start(t, c)
	w := kafkatest.Writer(t, b.topic)
	kafkatest.Produce(t, w, kafka.Message{Key: []byte("stuck"), Value: []byte("0"), Headers: token("stuck-0")})
	var batch []kafka.Message
	for i := range n {
		batch = append(batch, kafka.Message{Key: []byte("k" + strconv.Itoa(i%50)), Value: []byte(value), Headers: token("s-" + strconv.Itoa(i))})
		if len(batch) == 100 {
			kafkatest.Produce(t, w, batch...)
			batch = batch[:0]
		}
	}
	// It reaches its bound and stays there.
	var last int32
	for deadline := time.Now().Add(30 * time.Second); ; {
		time.Sleep(time.Second)
		now := handled.Load()
		if now == last && now > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still handling: %d", now)
		}
		last = now
	}
	if last > 200+100 || last < 100 {
		t.Fatalf("%d messages handled beyond the stuck one, want MaxPending (200) plus at most one fetch", last)
	}
	if got := committed(t, b.cfg.GroupID, b.topic); got > 0 {
		t.Fatalf("committed offset %d past the stuck message at 0", got)
	}
	release()
	waitCommitted(t, b, n+1)
	if got := handled.Load(); got != n+1 {
		t.Fatalf("handled %d, want %d", got, n+1)
	}
}

// TestKeyedKills SIGKILLs consumers running lanes at random moments, while
// a slow key holds the watermark back and lanes beyond it commit: nothing is
// lost, nothing applied twice, every key's order holds, and the messages
// beyond the watermark that had committed are redelivered and skipped by
// the inbox.
func TestKeyedKills(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	if _, err := b.pool.Exec(context.Background(), "CREATE TABLE "+pgx.Identifier{b.schema, "skips"}.Sanitize()+" (token text NOT NULL, kafka_offset bigint NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	const n = 6000
	all := msgs("kk", n, 100)
	kafkatest.Produce(t, b.writer, all...)
	env := func(slow, hook string) []string {
		return []string{"CHILD_SCHEMA=" + b.schema, "CHILD_TOPIC=" + b.topic, "CHILD_GROUP=" + b.cfg.GroupID,
			"CHILD_BATCH=20", "CHILD_KEYED=8", "CHILD_SLOW=" + slow, "CHILD_HOOK=" + hook}
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	// Killed at random; with lanes stopped before their database commit
	// (each stops there when it gets there, the others run on); with lanes
	// stopped between their database commit and the offset commit; and at
	// random again.
	for kill, hook := range []string{"", "pause-at:consumer.before-db-commit", "pause", ""} {
		// A slow message early in each run holds its partition's watermark
		// while lanes beyond it commit.
		c := proctest.Start(t, "consumer", env(fmt.Sprintf("kk-%d", 1000*kill+5), hook)...)
		if name, ok := strings.CutPrefix(hook, "pause-at:"); ok {
			c.Saw(name, 30*time.Second)
		} else {
			c.Saw("COMMITTED", 30*time.Second)
		}
		time.Sleep(time.Duration(200+rng.IntN(600)) * time.Millisecond)
		c.Kill()
	}
	last := proctest.Start(t, "consumer", env("", "")...)
	waitCommitted(t, b, n)
	last.Stop(10 * time.Second)
	checkEffects(t, b, n)
	var skips int
	if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{b.schema, "skips"}.Sanitize()).Scan(&skips); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d redelivered messages skipped", skips)
	if skips == 0 {
		t.Fatal("no message beyond a watermark was redelivered and skipped; the test did not test what it says")
	}
}

// TestKeyedRebalance: members running lanes join and leave mid-flight:
// every message is applied once and every key in order.
func TestKeyedRebalance(t *testing.T) {
	t.Parallel()
	b := setup(t, 4)
	b.cfg.KeyConcurrency = 6
	b.cfg.BatchSize = 20
	const n = 8000
	kafkatest.Produce(t, b.writer, msgs("kr", n, 200)...)
	apply := insertEffect(b.effects)
	h := consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		time.Sleep(100 * time.Microsecond)
		return apply(ctx, tx, m)
	})
	newConsumer := func() *consumer.Consumer {
		c, err := consumer.New(b.cfg, h)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	stop1 := start(t, newConsumer())
	waitCount(t, b.pool, 60*time.Second, 1000, "SELECT count(*) FROM "+b.effects)
	start(t, newConsumer()) // joins: the group rebalances under the first's lanes
	waitCount(t, b.pool, 60*time.Second, 4000, "SELECT count(*) FROM "+b.effects)
	stop1() // leaves: its lanes finish or are abandoned, its partitions move
	waitCommitted(t, b, n)
	checkEffects(t, b, n)
}

// TestKeyedHandlerKillsProcess: with lanes, a message whose handler kills
// the process, far beyond the watermark while a slow key holds it back, is
// dead-lettered as process_died after a bounded number of deaths, and every
// other message is applied once.
func TestKeyedHandlerKillsProcess(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	if _, err := b.pool.Exec(context.Background(), "CREATE TABLE "+pgx.Identifier{b.schema, "skips"}.Sanitize()+" (token text NOT NULL, kafka_offset bigint NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	const n, maxAttempts = 600, 3
	kafkatest.Produce(t, b.writer, msgs("kx", n, 50)...)
	runs := 0
	for committed(t, b.cfg.GroupID, b.topic) < n {
		runs++
		if runs > 2*maxAttempts+4 {
			t.Fatalf("%d runs and the partition is still at offset %d: the message loops", runs-1, committed(t, b.cfg.GroupID, b.topic))
		}
		// kx-3 is slow (3s) and holds the watermark; kx-420 kills.
		child := proctest.Start(t, "consumer", "CHILD_SCHEMA="+b.schema, "CHILD_TOPIC="+b.topic, "CHILD_GROUP="+b.cfg.GroupID,
			"CHILD_HOOK=exit:kx-420", "CHILD_SLOW=kx-3", "CHILD_BATCH=20", "CHILD_KEYED=8", "CHILD_MAX_ATTEMPTS="+strconv.Itoa(maxAttempts))
		if !child.Exited(60 * time.Second) {
			waitCommitted(t, b, n)
			child.Stop(10 * time.Second)
		}
	}
	t.Logf("%d runs", runs)
	checkEffects(t, b, n-1)
	dl := deadLetters(t, b)
	if len(dl) != 1 || !strings.HasPrefix(dl["kx-420@420"], consumer.ReasonProcessDied+":") {
		t.Fatalf("dead letters %v, want only kx-420@420 (process_died)", dl)
	}
}

// TestKeyedAttemptRowStopsAtFetched: the attempt row a killed member's
// lanes leave reaches no further than what they fetched, so the next owner
// runs one message at a time only over offsets a lane may have been running,
// not until offsets not yet written arrive (with a row MaxPending past the
// last lane, make demo's order→shipped p50 went from 0.2s to 4s).
func TestKeyedAttemptRowStopsAtFetched(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	if _, err := b.pool.Exec(context.Background(), "CREATE TABLE "+pgx.Identifier{b.schema, "skips"}.Sanitize()+" (token text NOT NULL, kafka_offset bigint NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	const n = 300
	kafkatest.Produce(t, b.writer, msgs("ka", n, 30)...)
	c := proctest.Start(t, "consumer", "CHILD_SCHEMA="+b.schema, "CHILD_TOPIC="+b.topic, "CHILD_GROUP="+b.cfg.GroupID,
		"CHILD_BATCH=20", "CHILD_KEYED=4", "CHILD_HOOK=pause-at:consumer.before-db-commit")
	c.Saw("consumer.before-db-commit", 30*time.Second)
	c.Kill()
	var rows, last int64
	if err := b.pool.QueryRow(context.Background(), "SELECT count(*), coalesce(max(last_offset), -1) FROM "+pgx.Identifier{b.schema, "dead_letters_attempts"}.Sanitize()).Scan(&rows, &last); err != nil {
		t.Fatal(err)
	}
	if rows == 0 || last >= n {
		t.Fatalf("%d attempt rows reaching offset %d; want a row, reaching no further than the last offset written (%d)", rows, last, n-1)
	}
}

func token(s string) []kafka.Header {
	return []kafka.Header{{Key: "Idempotency-Key", Value: []byte(s)}}
}
