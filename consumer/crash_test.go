package consumer_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/pgtest"
	"github.com/exactlyhq/exactly/internal/proctest"
	"github.com/exactlyhq/exactly/internal/testhook"
)

// The crash tests run the consumer in a child process (this test binary,
// re-executed by proctest) and SIGKILL it.

// childMain runs a consumer that writes one effect per message. With
// CHILD_HOOK=pause it prints COMMITTED and stops dead after its first
// database commit, before the offset commit; with CHILD_HOOK=pause-at:NAME
// it prints NAME and stops dead at the test hook NAME; with
// CHILD_HOOK=exit:TOKEN its handler exits the process at that token.
// Otherwise it prints COMMITTED after every database commit and runs until
// SIGTERM.
func childMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	pool, err := pgxpool.New(ctx, pgtest.DSN())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer pool.Close()
	schema := os.Getenv("CHILD_SCHEMA")
	cfg := testConfig(pool, schema, os.Getenv("CHILD_TOPIC"), os.Getenv("CHILD_GROUP"))
	cfg.BatchSize, _ = strconv.Atoi(os.Getenv("CHILD_BATCH"))
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	var mu sync.Mutex
	hook := os.Getenv("CHILD_HOOK")
	testhook.Set("consumer.after-db-commit", func() {
		mu.Lock()
		defer mu.Unlock()
		fmt.Println("COMMITTED")
		if hook == "pause" {
			select {} // the parent SIGKILLs us here
		}
	})
	// pause-at:NAME prints NAME and stops dead at the hook of that name.
	if name, ok := strings.CutPrefix(hook, "pause-at:"); ok {
		testhook.Set(name, func() {
			fmt.Println(name)
			select {}
		})
	}
	// CHILD_FREEZE=NAME: the test hook NAME (replacing the one set above, if
	// any) prints FROZEN and waits for a SIGCONT (freezeAt, group_test.go).
	if name := os.Getenv("CHILD_FREEZE"); name != "" {
		freezeAt(name)
	}
	if n, err := strconv.Atoi(os.Getenv("CHILD_MAX_ATTEMPTS")); err == nil {
		cfg.MaxAttempts = n
	}
	// CHILD_KEYED=N: lanes (Config.KeyConcurrency); each skipped duplicate
	// is recorded in the table skips, in its transaction.
	if n, err := strconv.Atoi(os.Getenv("CHILD_KEYED")); err == nil {
		cfg.KeyConcurrency = n
		skips := pgx.Identifier{schema, "skips"}.Sanitize()
		cfg.OnDuplicate = func(ctx context.Context, tx pgx.Tx, m consumer.Message, _ []byte) error {
			_, err := tx.Exec(ctx, "INSERT INTO "+skips+" (token, kafka_offset) VALUES ($1, $2)", m.Token.String(), m.Offset)
			return err
		}
	}
	apply := insertEffect(pgx.Identifier{schema, "effects"}.Sanitize())
	exitOn, exits := strings.CutPrefix(os.Getenv("CHILD_HOOK"), "exit:")
	// CHILD_SLOW=TOKEN: the handler of TOKEN takes 3s, and with exit: the
	// handler that kills the process does so after 500ms.
	slow := os.Getenv("CHILD_SLOW")
	c, err := consumer.New(cfg, consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		if exits && m.Token.String() == exitOn {
			if slow != "" {
				time.Sleep(500 * time.Millisecond)
			}
			os.Exit(3) // a handler that kills its process
		}
		if slow != "" && m.Token.String() == slow {
			time.Sleep(3 * time.Second)
		}
		return apply(ctx, tx, m)
	}))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := c.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func startChild(t *testing.T, b bundle, hook string, batch int) *proctest.Child {
	t.Helper()
	return proctest.Start(t, "consumer", "CHILD_SCHEMA="+b.schema, "CHILD_TOPIC="+b.topic,
		"CHILD_GROUP="+b.cfg.GroupID, "CHILD_HOOK="+hook, "CHILD_BATCH="+strconv.Itoa(batch))
}

// TestCrashAfterDBCommit kills the consumer after its transaction committed
// and before it committed the Kafka offset. The restarted consumer gets the
// batch again and must skip it.
func TestCrashAfterDBCommit(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	const n = 300
	kafkatest.Produce(t, b.writer, msgs("crash", n, 7)...)

	first := startChild(t, b, "pause", 50)
	first.WaitLine(t, "COMMITTED", 60*time.Second)
	first.Kill()
	var applied int
	if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+b.effects).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if applied == 0 {
		t.Fatal("the killed consumer committed nothing; the test did not reach the window")
	}
	if got := committed(t, b.cfg.GroupID, b.topic); got > 0 {
		t.Fatalf("offset %d was committed before the kill; the test did not reach the window", got)
	}

	second := startChild(t, b, "", 50)
	waitCommitted(t, b, n)
	second.Kill()
	checkEffects(t, b, n)
	var dups int
	if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{b.schema, "inbox"}.Sanitize()).Scan(&dups); err != nil || dups != n {
		t.Fatalf("inbox holds %d tokens (err %v), want %d", dups, err, n)
	}
}

// TestKillWindows kills the consumer at each window of the commit order:
// before the database commit (nothing of the batch committed), after it and
// before the offset commit (the batch committed, its offset not), and after
// the offset commit. A new consumer then applies every message exactly once.
func TestKillWindows(t *testing.T) {
	t.Parallel()
	for _, w := range []struct {
		hook             string
		applied, offsets bool // whether the kill left effects, committed offsets
	}{
		{"consumer.before-db-commit", false, false},
		{"consumer.after-db-commit", true, false},
		{"consumer.after-offset-commit", true, true},
	} {
		t.Run(w.hook, func(t *testing.T) {
			t.Parallel()
			b := setup(t, 1)
			const n = 300
			kafkatest.Produce(t, b.writer, msgs("w", n, 7)...)
			first := startChild(t, b, "pause-at:"+w.hook, 50)
			first.WaitLine(t, w.hook, 60*time.Second)
			first.Kill()
			var applied int
			if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+b.effects).Scan(&applied); err != nil {
				t.Fatal(err)
			}
			offset := committed(t, b.cfg.GroupID, b.topic)
			if (applied > 0) != w.applied || (offset > 0) != w.offsets {
				t.Fatalf("killed with %d effects and offset %d: not the window %s", applied, offset, w.hook)
			}
			second := startChild(t, b, "", 50)
			waitCommitted(t, b, n)
			second.Kill()
			checkEffects(t, b, n)
		})
	}
}

// TestHandlerKillsProcess: a message whose handler kills the process is
// dead-lettered as process_died after a bounded number of deaths, and
// everything else is applied once.
func TestHandlerKillsProcess(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	const n, maxAttempts = 300, 3
	kafkatest.Produce(t, b.writer, msgs("kill", n, 7)...)
	runs := 0
	for committed(t, b.cfg.GroupID, b.topic) < n {
		runs++
		if runs > maxAttempts+4 {
			t.Fatalf("%d runs and the partition is still at offset %d: the message loops", runs-1, committed(t, b.cfg.GroupID, b.topic))
		}
		child := proctest.Start(t, "consumer", "CHILD_SCHEMA="+b.schema, "CHILD_TOPIC="+b.topic,
			"CHILD_GROUP="+b.cfg.GroupID, "CHILD_HOOK=exit:kill-120", "CHILD_BATCH=50", "CHILD_MAX_ATTEMPTS="+strconv.Itoa(maxAttempts))
		if !child.Exited(60 * time.Second) {
			// It got past the message: let it finish, then stop it.
			waitCommitted(t, b, n)
			child.Stop(10 * time.Second)
		}
	}
	t.Logf("%d runs", runs)
	checkEffects(t, b, n-1)
	dl := deadLetters(t, b)
	if want := consumer.ReasonProcessDied + ":" + strconv.Itoa(maxAttempts) + ":"; len(dl) != 1 || !strings.HasPrefix(dl["kill-120@120"], want) {
		t.Fatalf("dead letters %v, want kill-120@120 with prefix %q", dl, want)
	}
}

// TestDeathChargedAlone: a message whose handler kills the process while a
// slow message of another partition runs is the only one dead-lettered. The
// slow one was in flight at every death; with attempts running one per
// partition at once, each death was charged to both, and both were
// dead-lettered as process_died.
func TestDeathChargedAlone(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	const perPartition, maxAttempts = 10, 2
	w := kafkatest.Writer(t, b.topic)
	w.Balancer = kafka.BalancerFunc(func(m kafka.Message, partitions ...int) int {
		return int(m.Key[0] - '0')
	})
	var ms []kafka.Message
	for p, first := range []string{"killer", "slow"} {
		for i := range perPartition {
			tok := fmt.Sprintf("p%d-%d", p, i)
			if i == 0 {
				tok = first
			}
			ms = append(ms, kafka.Message{Key: []byte(strconv.Itoa(p)), Value: []byte(strconv.Itoa(i)),
				Headers: []kafka.Header{{Key: "Idempotency-Key", Value: []byte(tok)}}})
		}
	}
	kafkatest.Produce(t, w, ms...)
	runs := 0
	for committed(t, b.cfg.GroupID, b.topic) < 2*perPartition {
		runs++
		if runs > maxAttempts+4 {
			t.Fatalf("%d runs and the group is still at %d: the message loops", runs-1, committed(t, b.cfg.GroupID, b.topic))
		}
		child := proctest.Start(t, "consumer", "CHILD_SCHEMA="+b.schema, "CHILD_TOPIC="+b.topic,
			"CHILD_GROUP="+b.cfg.GroupID, "CHILD_HOOK=exit:killer", "CHILD_SLOW=slow", "CHILD_BATCH=50",
			"CHILD_MAX_ATTEMPTS="+strconv.Itoa(maxAttempts))
		if !child.Exited(60 * time.Second) {
			waitCommitted(t, b, 2*perPartition)
			child.Stop(10 * time.Second)
		}
	}
	t.Logf("%d runs", runs)
	checkEffects(t, b, 2*perPartition-1)
	dl := deadLetters(t, b)
	if len(dl) != 1 || !strings.HasPrefix(dl["killer@0"], consumer.ReasonProcessDied+":") {
		t.Fatalf("dead letters %v, want only killer@0 (process_died)", dl)
	}
}

// TestRandomKills SIGKILLs consumers at random moments while a producer
// writes 20,000 messages: no effect lost, none doubled, per-key order kept.
func TestRandomKills(t *testing.T) {
	t.Parallel()
	b := setup(t, 4)
	const n = 20000
	all := msgs("rk", n, 100)
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; i < n; i += 1000 {
			kafkatest.Produce(t, b.writer, all[i:i+1000]...)
			time.Sleep(300 * time.Millisecond)
		}
	}()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	kills := 0
	for kills < 5 {
		c := startChild(t, b, "", 200)
		// Kill it mid-work when there is work left; a child that finds
		// everything done is killed anyway, which still tests the restart.
		c.Saw("COMMITTED", 30*time.Second)
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		c.Kill()
		kills++
	}
	<-produced
	last := startChild(t, b, "", 200)
	waitCommitted(t, b, n)
	last.Kill()
	checkEffects(t, b, n)
}
