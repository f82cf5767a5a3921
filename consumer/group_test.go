package consumer_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/metrictest"
	"github.com/exactlyhq/exactly/internal/pgtest"
	"github.com/exactlyhq/exactly/internal/proctest"
	"github.com/exactlyhq/exactly/internal/services"
	"github.com/exactlyhq/exactly/internal/testhook"
)

// Group-level failure modes: members that freeze, come and go, share too
// small a pool; offsets that expire; topics that appear late; two groups on
// one database; Postgres restarting under open transactions. Each test
// checks that every message is applied exactly once (checkEffects) and that
// the group's committed offsets reach the end (waitCommitted).

// TestGroupFrozenMember freezes a member (SIGSTOP) in the middle of its work
// for longer than the session timeout, while a second member takes its
// partitions over and processes them; then the frozen member resumes, with
// its transactions, offsets and heartbeats from a generation that is over.
//
// It catches: a late offset commit of the frozen member that Kafka accepts
// and that moves a committed offset past what Postgres settled (lost
// messages) or back (watchCommitted samples both all along); the frozen
// member's open transaction committing effects the new owner applies too
// (doubled); the new owner stalling on a partition the frozen member never
// held (partition 3 is idle in the frozen member and must be drained during
// the freeze).
//
// The freeze points: inside a batch transaction whose claims hold inbox
// locks (the new owner's claims wait on them until the thaw), between the
// database commit and the offset commit (the new owner gets that batch again
// and must skip it: duplicates are counted), and at a random moment.
func TestGroupFrozenMember(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, hook string }{
		{"mid-transaction", "consumer.before-db-commit"},
		{"between-commits", "consumer.after-db-commit"},
		{"anywhere", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const parts = 4
			b := setup(t, parts)
			keys := partitionKeys(parts, 5)
			seq := newKeyedSeq("fz")
			// Partitions 0-2 only: the frozen member holds no transaction on
			// partition 3.
			wave1 := seq.msgs(append(append(append([]string{}, keys[0]...), keys[1]...), keys[2]...), 4500)
			kafkatest.Produce(t, b.writer, wave1...)
			var env []string
			if tc.hook != "" {
				env = append(env, "CHILD_FREEZE="+tc.hook)
			}
			frozen := startMember(t, b, 50, env...)
			if tc.hook != "" {
				frozen.WaitLine(t, "FROZEN", 60*time.Second)
			} else {
				if !frozen.Saw("COMMITTED", 60*time.Second) {
					t.Fatal("the first member never committed a batch")
				}
				// A random moment of its work, not a wait for anything.
				time.Sleep(time.Duration(rand.IntN(200)) * time.Millisecond)
			}
			frozen.Freeze(t)
			frozenAt := time.Now()
			var applied int
			if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+b.effects).Scan(&applied); err != nil {
				t.Fatal(err)
			}
			t.Logf("frozen with %d of %d messages applied", applied, len(wave1))
			watch := watchCommitted(t, b, parts)

			mp := metrictest.NewProvider()
			cfg := b.cfg
			cfg.MeterProvider = mp
			second, err := consumer.New(cfg, insertEffect(b.effects))
			if err != nil {
				t.Fatal(err)
			}
			start(t, second)
			all := append(wave1, seq.msgs(flatten(keys), 400)...)
			kafkatest.Produce(t, b.writer, all[len(wave1):]...)
			// The second member gets partition 3 only once the coordinator
			// expelled the frozen member, and must drain it meanwhile.
			waitPartitionCommitted(t, b, parts, 3, kafkatest.EndOffset(t, b.topic, 3), 60*time.Second)
			if tc.hook == "consumer.before-db-commit" {
				// The frozen member's transaction holds locks: its inbox
				// claims, and the assignment's start row it deletes as its
				// batch settles. The second member, which finds that row and
				// so runs one message at a time, waits on one or the other.
				waitCount(t, b.pool, 30*time.Second, 1, `SELECT count(*) FROM pg_stat_activity
					WHERE wait_event_type = 'Lock' AND (query LIKE '%' || $1 || '%' OR query LIKE '%' || $2 || '%')`,
					pgx.Identifier{b.schema, "inbox"}.Sanitize(), pgx.Identifier{b.schema, "dead_letters_attempts"}.Sanitize())
			}
			if tc.hook == "consumer.after-db-commit" {
				// The batch the frozen member committed to Postgres but not
				// to Kafka comes to the second member, which skips it.
				waitMetric(t, mp, consumer.MetricMessages+"/duplicate", 1, 30*time.Second)
			}
			// The coordinator expelled the frozen member: its session timed out.
			waitGroupStable(t, b.cfg.GroupID, 1, 10*time.Second)
			frozen.Thaw(t)
			t.Logf("thawed after %v", time.Since(frozenAt).Round(time.Millisecond))

			more := seq.msgs(flatten(keys), 400)
			all = append(all, more...)
			kafkatest.Produce(t, b.writer, more...)
			waitCommitted(t, b, int64(len(all)))
			watch()
			checkEffects(t, b, len(all))
			if dl := deadLetters(t, b); len(dl) != 0 {
				t.Fatalf("dead letters %v", dl)
			}
		})
	}
}

// freezeAt, in a child process, makes the test hook name print FROZEN and
// wait for a SIGCONT: the parent SIGSTOPs the child once it read the line,
// so the goroutine that reached the hook stays at it until the thaw (and the
// others stop wherever they are). Later calls of the hook wait for the same
// SIGCONT; after it the hook does nothing.
func freezeAt(name string) {
	cont := make(chan os.Signal, 1)
	signal.Notify(cont, syscall.SIGCONT)
	var once sync.Once
	testhook.Set(name, func() {
		once.Do(func() {
			fmt.Println("FROZEN")
			<-cont
		})
	})
}

// TestGroupRebalanceStorm: members (child processes) join, leave cleanly and
// are killed every few seconds for 40s while a producer writes. No message
// is lost or applied twice, each key's effects are in order, and no
// committed offset ever passes what Postgres settled or goes back.
//
// It catches: a generation's transaction or offset commit outliving the
// generation (a new owner applying the same batch, an old offset committed
// over a newer one), a shutdown during a rebalance that commits an offset
// whose batch was rolled back, partitions left unassigned after a member
// leaves, and a group that no longer converges after the storm.
func TestGroupRebalanceStorm(t *testing.T) {
	t.Parallel()
	const (
		parts  = 6
		n      = 12000
		storm  = 40 * time.Second
		chunk  = 100
		maxMem = 4
	)
	b := setup(t, parts)
	all := msgs("storm", n, 120)
	watch := watchCommitted(t, b, parts)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))

	var members []*proctest.Child
	joins, leaves, kills := 0, 0, 0
	join := func() {
		members = append(members, startMember(t, b, 100))
		joins++
	}
	join()
	join()
	began := time.Now()
	nextChange := began.Add(2 * time.Second)
	produced := 0
	pace := time.NewTicker(50 * time.Millisecond) // the producer's pace
	defer pace.Stop()
	for ; time.Since(began) < storm || produced < n; <-pace.C {
		if produced < n { // evenly over the storm
			due := min(n, int(float64(n)*float64(time.Since(began))/float64(storm))+chunk)
			if due > produced {
				kafkatest.Produce(t, b.writer, all[produced:due]...)
				produced = due
			}
		}
		if time.Now().After(nextChange) && time.Since(began) < storm {
			switch {
			case len(members) < 2 || (len(members) < maxMem && rng.IntN(2) == 0):
				join()
			default:
				i := rng.IntN(len(members))
				m := members[i]
				members = append(members[:i], members[i+1:]...)
				if (leaves+kills)%3 != 2 { // every third member to go is killed
					if !m.Stop(20 * time.Second) {
						t.Errorf("a member did not leave cleanly on SIGINT")
					}
					leaves++
				} else {
					m.Kill() // its partitions wait for the session timeout
					kills++
				}
			}
			nextChange = time.Now().Add(time.Duration(1500+rng.IntN(2000)) * time.Millisecond)
		}
	}
	t.Logf("storm of %v: %d joins, %d clean leaves, %d kills; %d members at the end", time.Since(began).Round(time.Second), joins, leaves, kills, len(members))
	if len(members) == 0 {
		join()
	}
	waitCommitted(t, b, n)
	watch()
	checkEffects(t, b, n)
	if dl := deadLetters(t, b); len(dl) != 0 {
		t.Fatalf("dead letters %v", dl)
	}
}

// TestGroupPoolExhaustion: six partitions share a pool of two connections
// (then, after a second member joins, both members share it), with a
// failing message that takes the savepoint path and is dead-lettered.
// Partitions wait for a connection instead of failing or deadlocking, and
// every message is applied once.
//
// It catches: a partition that needs a second connection while it holds one
// (a transaction plus a query on the pool: with all connections held by
// such partitions, the consumer deadlocks), a pool acquire timeout treated
// as a handler failure (a dead letter for a healthy message), and a
// rebalance that hangs on partitions waiting for a connection.
func TestGroupPoolExhaustion(t *testing.T) {
	t.Parallel()
	const parts, n, poison = 6, 6000, "px-777"
	b := setup(t, parts)
	small := smallPool(t, 2)
	cfg := b.cfg
	cfg.Pool = small
	cfg.MaxAttempts = 2
	apply := insertEffect(b.effects)
	h := consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		if m.Token.String() == poison {
			return errors.New("poison")
		}
		if m.Offset%50 == 0 {
			time.Sleep(2 * time.Millisecond) // hold the connection a while
		}
		return apply(ctx, tx, m)
	})
	all := msgs("px", n, 60)
	kafkatest.Produce(t, b.writer, all[:n/2]...)
	c1, err := consumer.New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	start(t, c1)
	waitCount(t, b.pool, 60*time.Second, n/4, "SELECT count(*) FROM "+b.effects)
	c2, err := consumer.New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	start(t, c2)
	kafkatest.Produce(t, b.writer, all[n/2:]...)
	waitCommitted(t, b, n)
	checkEffects(t, b, n-1)
	if dl := deadLetters(t, b); len(dl) != 1 || dl[poison+"@"+strconv.Itoa(poisonOffset(t, b, poison))] == "" {
		t.Fatalf("dead letters %v, want %s only", dl, poison)
	}
	st := small.Stat()
	t.Logf("pool: max %d, %d connections made, %d acquires, %d waited for an empty pool, %v waiting", st.MaxConns(), st.NewConnsCount(), st.AcquireCount(), st.EmptyAcquireCount(), st.AcquireDuration())
	// An acquire that found the pool empty waited for a connection to be
	// made or released; more of them than connections made means some
	// waited for a release: the pool was exhausted.
	if st.MaxConns() != 2 || st.EmptyAcquireCount() <= st.NewConnsCount() {
		t.Fatalf("the pool (max %d) never ran out of connections (%d acquires waited, %d connections made): the test did not exhaust it",
			st.MaxConns(), st.EmptyAcquireCount(), st.NewConnsCount())
	}
}

// poisonOffset returns the offset of the dead letter with token tok.
func poisonOffset(t *testing.T, b bundle, tok string) int {
	t.Helper()
	var off int
	if err := b.pool.QueryRow(context.Background(), "SELECT kafka_offset FROM "+pgx.Identifier{b.schema, "dead_letters"}.Sanitize()+" WHERE token = $1", tok).Scan(&off); err != nil {
		t.Fatalf("dead letter %s: %v", tok, err)
	}
	return off
}

// smallPool returns a pool of at most maxConns connections with an empty
// search_path, as pgtest.Pool, closed when the test ends.
func smallPool(t *testing.T, maxConns int32) *pgxpool.Pool {
	t.Helper()
	pcfg, err := pgxpool.ParseConfig(pgtest.DSN())
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ConnConfig.RuntimeParams["search_path"] = ""
	pcfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// TestGroupOffsetsExpired: a group's committed offsets disappear (Kafka
// expires the offsets of a group without members after
// offsets.retention.minutes, and deletes the group with them); the group
// starts again from StartOffset (the first offset), and the inbox skips
// every message it already applied: all of them come back as duplicates,
// only the messages produced since are processed.
//
// It catches: a consumer that trusts committed offsets alone (everything
// applied a second time), one that fails or stalls on a partition without
// a committed offset, and attempts recorded before the expiry that make the
// restarted consumer dead-letter messages it only skips.
//
// The last case caught a defect (attempts.go): the row an assignment
// recorded for its first batch ("a batch from S to E started") stayed after
// the batch settled; once the offsets were gone, the next assignment read it
// as an earlier owner's death and, with MaxAttempts 1, dead-lettered the
// message at S as process_died although it was applied and nothing died.
func TestGroupOffsetsExpired(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		forget      func(t *testing.T, group, topic string, parts int)
		maxAttempts int
	}{
		{name: "offsets-deleted", forget: deleteOffsets},
		{name: "group-deleted", forget: deleteGroup},
		{name: "max-attempts-1", forget: deleteOffsets, maxAttempts: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const parts, n, later = 3, 1200, 300
			b := setup(t, parts)
			all := msgs("exp", n+later, 30)
			kafkatest.Produce(t, b.writer, all[:n]...)
			first, err := consumer.New(b.cfg, insertEffect(b.effects))
			if err != nil {
				t.Fatal(err)
			}
			stop := start(t, first)
			waitCommitted(t, b, n)
			stop() // the group is empty now, as before an expiry
			tc.forget(t, b.cfg.GroupID, b.topic, parts)
			if got := committed(t, b.cfg.GroupID, b.topic); got != 0 {
				t.Fatalf("the group still has committed offsets summing to %d", got)
			}
			kafkatest.Produce(t, b.writer, all[n:]...)

			mp := metrictest.NewProvider()
			cfg := b.cfg
			cfg.MeterProvider = mp
			cfg.MaxAttempts = tc.maxAttempts
			again, err := consumer.New(cfg, insertEffect(b.effects))
			if err != nil {
				t.Fatal(err)
			}
			start(t, again)
			waitCommitted(t, b, n+later)
			checkEffects(t, b, n+later)
			if dl := deadLetters(t, b); len(dl) != 0 {
				t.Fatalf("dead letters %v", dl)
			}
			counts, _, _ := collect(t, mp)
			if dups, fresh := counts[consumer.MetricMessages+"/duplicate"], counts[consumer.MetricMessages+"/processed"]; dups != n || fresh != later {
				t.Fatalf("after the expiry: %d duplicates and %d processed, want %d (everything from the first offset again, skipped) and %d (the new messages)", dups, fresh, n, later)
			}
		})
	}
}

// deleteOffsets deletes the group's committed offsets of topic, retrying
// while the group still has members (it must be empty).
func deleteOffsets(t *testing.T, group, topic string, parts int) {
	t.Helper()
	ps := make([]int, parts)
	for i := range ps {
		ps[i] = i
	}
	withClient(t, func(ctx context.Context, c *kafka.Client) error {
		res, err := c.OffsetDelete(ctx, &kafka.OffsetDeleteRequest{GroupID: group, Topics: map[string][]int{topic: ps}})
		if err != nil {
			return err
		}
		if res.Error != nil {
			return res.Error
		}
		for _, p := range res.Topics[topic] {
			if p.Error != nil {
				return fmt.Errorf("partition %d: %w", p.Partition, p.Error)
			}
		}
		return nil
	})
}

// deleteGroup deletes the group, retrying while it still has members.
func deleteGroup(t *testing.T, group, _ string, _ int) {
	t.Helper()
	withClient(t, func(ctx context.Context, c *kafka.Client) error {
		res, err := c.DeleteGroups(ctx, &kafka.DeleteGroupsRequest{GroupIDs: []string{group}})
		if err != nil {
			return err
		}
		return res.Errors[group]
	})
}

// withClient calls fn with a Kafka client until it succeeds or 30s passed.
func withClient(t *testing.T, fn func(context.Context, *kafka.Client) error) {
	t.Helper()
	transport := &kafka.Transport{}
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(kafkatest.Brokers()...), Timeout: 10 * time.Second, Transport: transport}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		err := fn(ctx, client)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestGroupTopicCreatedLater: a consumer starts on a topic that does not
// exist yet; the operator then creates it with three partitions and
// produces. A user expects the topic to have the partitions asked for, and
// every message produced to it to be consumed within a bounded time.
//
// What happens (Kafka 4.1 with auto.create.topics.enable=true, Apache
// Kafka's default, kafka-go v0.4.51): every JoinGroup's leader reads the
// topics' metadata with allow_auto_topic_creation=true (kafka-go's
// Conn.ReadPartitions), so the group's own join creates the topic with the
// broker's num.partitions (1 here), and the operator's create is a no-op
// (kafka-go ignores TOPIC_ALREADY_EXISTS). While the topic does not exist,
// kafka-go's partition watcher ends each generation at once (a rebalance
// every few milliseconds). When the topic comes into being between the
// leader's metadata read (no partitions: nothing assigned) and the
// watcher's first read (which takes 1 partition as its baseline), the
// watcher never sees a change: the generation stays with nothing assigned
// and no message is consumed until some unrelated rebalance. Six groups
// run side by side so that the race shows up.
func TestGroupTopicCreatedLater(t *testing.T) {
	t.Parallel()
	groups := make([]bundle, 6)
	for i := range groups {
		b := setup(t, 1) // its schema and effects; the topic is replaced
		b.topic = "test-late-" + pgtest.RandomSuffix()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = kafkatest.DeleteTopic(ctx, b.topic)
		})
		b.cfg.Topics = []string{b.topic}
		b.cfg.PartitionWatchInterval = 200 * time.Millisecond
		c, err := consumer.New(b.cfg, insertEffect(b.effects))
		if err != nil {
			t.Fatal(err)
		}
		start(t, c)
		groups[i] = b
	}
	for _, b := range groups {
		waitGroupStable(t, b.cfg.GroupID, 1, 30*time.Second)
	}
	// The operator creates the topics, at once.
	created := make([]error, len(groups))
	var wg sync.WaitGroup
	for i, b := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			// One partition: what a join's auto-creation makes (below);
			// partitions added later are TestPartitionsAdded's.
			created[i] = kafkatest.CreateTopic(ctx, b.topic, 1)
		}()
	}
	wg.Wait()
	const n = 60
	for i, b := range groups {
		// With auto.create.topics.enable=true (Kafka's default, and this
		// broker's), kafka-go's group leader creates a missing topic with
		// the broker's num.partitions when it reads its metadata at a join,
		// as Kafka's own consumer does by default: the operator's create
		// then finds it. Either way, what is written must be consumed.
		if created[i] != nil {
			t.Errorf("group %d: creating its topic: %v", i, created[i])
		}
		groups[i].writer = kafkatest.Writer(t, b.topic)
		kafkatest.Produce(t, groups[i].writer, msgs("late"+strconv.Itoa(i), n, 6)...)
	}
	const bound = 20 * time.Second
	deadline := time.Now().Add(bound)
	for i, b := range groups {
		for committed(t, b.cfg.GroupID, b.topic) < n && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if got := committed(t, b.cfg.GroupID, b.topic); got < n {
			t.Errorf("group %d: %v after its topic was created and written to, it committed %d of %d messages: it was never assigned the topic's partitions", i, bound, got, n)
			continue
		}
		checkEffects(t, b, n)
	}
}

// waitGroupStable waits until the group is Stable with members members.
func waitGroupStable(t *testing.T, group string, members int, timeout time.Duration) {
	t.Helper()
	transport := &kafka.Transport{}
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(kafkatest.Brokers()...), Timeout: 5 * time.Second, Transport: transport}
	deadline := time.Now().Add(timeout)
	state := ""
	for {
		res, err := client.DescribeGroups(context.Background(), &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
		if err == nil && len(res.Groups) == 1 {
			g := res.Groups[0]
			state = fmt.Sprintf("%s with %d members", g.GroupState, len(g.Members))
			if g.GroupState == "Stable" && len(g.Members) == members {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s not stable with %d members after %v: %s (err %v)", group, members, timeout, state, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGroupTwoGroupsOneDatabase: two groups, two members each, consume one
// topic into one database: the same inbox table and the same effects table,
// each group in its own inbox scope (Scope defaults to GroupID). Each group
// applies every message once, duplicates sent by the producer included.
//
// It catches: groups sharing a scope (the second group would skip every
// message as a duplicate of the first's), tokens keyed without the scope
// (conflicts or skips across groups), and dead-letter or attempt rows of one
// group read by the other.
func TestGroupTwoGroupsOneDatabase(t *testing.T) {
	t.Parallel()
	const parts, n = 3, 2000
	b := setup(t, parts)
	ctx := context.Background()
	if _, err := b.pool.Exec(ctx, "ALTER TABLE "+b.effects+" ADD COLUMN grp text NOT NULL DEFAULT ''"); err != nil {
		t.Fatal(err)
	}
	groups := map[string]bundle{}
	for _, g := range []string{"a", "b"} {
		gb := b
		gb.cfg.GroupID = b.cfg.GroupID + "-" + g
		gb.cfg.Inbox.Scope = "" // defaults to the GroupID
		gb.effects = pgx.Identifier{b.schema, "effects_" + g}.Sanitize()
		if _, err := b.pool.Exec(ctx, "CREATE VIEW "+gb.effects+" AS SELECT * FROM "+b.effects+" WHERE grp = '"+g+"'"); err != nil {
			t.Fatal(err)
		}
		h := consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
			_, err := tx.Exec(ctx, "INSERT INTO "+b.effects+" (token, key, value, kafka_partition, kafka_offset, attempt, grp) VALUES ($1, $2, $3, $4, $5, $6, $7)",
				m.Token.String(), string(m.Key), string(m.Value), m.Partition, m.Offset, m.Attempt, g)
			return err
		})
		for range 2 {
			c, err := consumer.New(gb.cfg, h)
			if err != nil {
				t.Fatal(err)
			}
			start(t, c)
		}
		groups[g] = gb
	}
	all := msgs("2g", n, 40)
	kafkatest.Produce(t, b.writer, all...)
	kafkatest.Produce(t, b.writer, all[500:1000]...) // sent twice
	for _, gb := range groups {
		waitCommitted(t, gb, n+500)
	}
	for g, gb := range groups {
		t.Run(g, func(t *testing.T) { checkEffects(t, gb, n) })
	}
	rows, err := b.pool.Query(ctx, "SELECT scope, count(*) FROM "+pgx.Identifier{b.schema, "inbox"}.Sanitize()+" GROUP BY scope")
	if err != nil {
		t.Fatal(err)
	}
	scopes := map[string]int{}
	var scope string
	var count int
	if _, err := pgx.ForEachRow(rows, []any{&scope, &count}, func() error { scopes[scope] = count; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(scopes) != 2 || scopes[groups["a"].cfg.GroupID] != n || scopes[groups["b"].cfg.GroupID] != n {
		t.Fatalf("inbox tokens by scope: %v, want %d in each group's scope", scopes, n)
	}
	if dl := deadLetters(t, b); len(dl) != 0 {
		t.Fatalf("dead letters %v", dl)
	}
}

// TestGroupPostgresRestarts restarts Postgres 21 times under the consumer,
// each time while a batch is in flight: 7 times in the handler with half the
// batch handled (claims and effects written, the transaction open), 7 times
// before its COMMIT, 7 times after it (before the offset commit). After
// each restart the consumer recovers by itself: the round's messages are
// committed before the next round. At the end every message has one effect.
//
// It catches: a batch whose transaction died with the server counted as
// settled (lost), one retried after it did commit without the inbox noticing
// (doubled), a retry loop that gives up or dead-letters healthy messages, a
// pool or partition that never recovers from a restart. Not parallel: it
// restarts the shared Postgres (docs/design.md, Tests).
func TestGroupPostgresRestarts(t *testing.T) {
	const parts, rounds, perRound = 2, 21, 200
	b := setup(t, parts)
	mp := metrictest.NewProvider()
	b.cfg.MeterProvider = mp
	const (
		inHandler = iota + 1
		beforeCommit
		afterCommit
	)
	var (
		armed  atomic.Int32 // the point that holds next; 0 for none
		target atomic.Value // inHandler: the token that holds
	)
	target.Store("")
	held, release, quit := make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	hold := func(point int32) {
		if !armed.CompareAndSwap(point, 0) {
			return
		}
		held <- struct{}{}
		select {
		case <-release:
		case <-quit:
		}
	}
	testhook.Set("consumer.before-db-commit", func() { hold(beforeCommit) })
	testhook.Set("consumer.after-db-commit", func() { hold(afterCommit) })
	t.Cleanup(func() {
		testhook.Set("consumer.before-db-commit", nil)
		testhook.Set("consumer.after-db-commit", nil)
	})
	apply := insertEffect(b.effects)
	c, err := consumer.New(b.cfg, consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		if m.Token.String() == target.Load().(string) {
			hold(inHandler)
		}
		return apply(ctx, tx, m)
	}))
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	t.Cleanup(func() { close(quit) }) // runs before start's cleanup, which waits for Run
	all := msgs("pgr", rounds*perRound, 20)
	began := time.Now()
	for r := range rounds {
		point := int32(r%3 + 1)
		round := all[r*perRound : (r+1)*perRound]
		target.Store(kafkatest.Header(round[perRound/2], "Idempotency-Key"))
		armed.Store(point)
		kafkatest.Produce(t, b.writer, round...)
		select {
		case <-held:
		case <-time.After(60 * time.Second):
			t.Fatalf("round %d: the consumer never reached the point %d", r, point)
		}
		services.RestartPostgres(t)
		select {
		case release <- struct{}{}:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: the held batch is gone", r)
		}
		waitCommitted(t, b, int64((r+1)*perRound))
	}
	t.Logf("%d restarts in %v", rounds, time.Since(began).Round(time.Second))
	checkEffects(t, b, len(all))
	if dl := deadLetters(t, b); len(dl) != 0 {
		t.Fatalf("the restarts dead-lettered %v", dl)
	}
	counts, _, _ := collect(t, mp)
	// Each restart under an open transaction fails that batch at least once.
	if got := counts[consumer.MetricRetries+"/transient"]; got < 2*rounds/3 {
		t.Fatalf("%d transient batch retries for %d restarts under an open transaction: the restarts missed the transactions", got, 2*rounds/3)
	}
}

// startMember starts a member of b's group in a child process (childMain)
// with batches of batch messages and env added.
func startMember(t *testing.T, b bundle, batch int, env ...string) *proctest.Child {
	t.Helper()
	return proctest.Start(t, "consumer", append([]string{"CHILD_SCHEMA=" + b.schema, "CHILD_TOPIC=" + b.topic,
		"CHILD_GROUP=" + b.cfg.GroupID, "CHILD_BATCH=" + strconv.Itoa(batch)}, env...)...)
}

// partitionKeys returns perPartition keys for each of n partitions, placed
// as the test writer's Murmur2 balancer places them.
func partitionKeys(n, perPartition int) [][]string {
	ids := make([]int, n)
	for i := range ids {
		ids[i] = i
	}
	keys := make([][]string, n)
	for i, full := 0, 0; full < n; i++ {
		k := "key-" + strconv.Itoa(i)
		p := (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: []byte(k)}, ids...)
		if len(keys[p]) < perPartition {
			keys[p] = append(keys[p], k)
			if len(keys[p]) == perPartition {
				full++
			}
		}
	}
	return keys
}

func flatten(keys [][]string) []string {
	var out []string
	for _, ks := range keys {
		out = append(out, ks...)
	}
	return out
}

// keyedSeq makes messages for chosen keys: tokens prefix-0, prefix-1, … and
// each key's values 0, 1, … across calls (checkEffects checks their order).
type keyedSeq struct {
	prefix string
	n      int
	next   map[string]int
}

func newKeyedSeq(prefix string) *keyedSeq { return &keyedSeq{prefix: prefix, next: map[string]int{}} }

// msgs returns count messages over keys in round robin.
func (s *keyedSeq) msgs(keys []string, count int) []kafka.Message {
	out := make([]kafka.Message, count)
	for i := range out {
		k := keys[i%len(keys)]
		out[i] = kafka.Message{
			Key:     []byte(k),
			Value:   []byte(strconv.Itoa(s.next[k])),
			Headers: []kafka.Header{{Key: "Idempotency-Key", Value: []byte(s.prefix + "-" + strconv.Itoa(s.n))}},
		}
		s.next[k]++
		s.n++
	}
	return out
}

// watchCommitted samples the group's committed offsets every 100ms until
// the returned stop is called (or the test ends), and then fails the test if
// a sample showed a committed offset that Postgres had not settled (an
// offset below it without an effect or a dead letter: the messages there
// would be lost) or a committed offset lower than an earlier sample's (a
// stale commit accepted). It assumes every offset of the topic holds one
// message with a token of its own (no duplicates, no transaction markers).
func watchCommitted(t *testing.T, b bundle, parts int) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var (
		problems []string
		seen     = map[string]bool{}
		samples  int
	)
	report := func(format string, args ...any) {
		if p := fmt.Sprintf(format, args...); !seen[p] {
			seen[p] = true
			problems = append(problems, p)
		}
	}
	q := `SELECT c.p, c.upto, (SELECT count(*) FROM (
			SELECT kafka_offset FROM ` + b.effects + ` WHERE kafka_partition = c.p AND kafka_offset < c.upto
			UNION
			SELECT kafka_offset FROM ` + pgx.Identifier{b.schema, "dead_letters"}.Sanitize() + `
			WHERE scope = $3 AND kafka_topic = $4 AND kafka_partition = c.p AND kafka_offset < c.upto) s)
		FROM unnest($1::int[], $2::bigint[]) AS c(p, upto)`
	go func() {
		defer close(done)
		last := map[int]int64{}
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			// Kafka first, then Postgres: an offset is committed only after
			// its batch committed in Postgres, so whatever it covers is
			// visible to the query that follows.
			offsets, err := kafkatest.Committed(ctx, b.cfg.GroupID, b.topic, parts)
			if err != nil {
				continue // the broker is busy; the next sample
			}
			var ps []int32
			var upto []int64
			for p, o := range offsets {
				ps, upto = append(ps, int32(p)), append(upto, o)
				if o < last[p] {
					report("partition %d: committed offset went back from %d to %d", p, last[p], o)
				}
				last[p] = o
			}
			rows, err := b.pool.Query(ctx, q, ps, upto, cmp.Or(b.cfg.Inbox.Scope, b.cfg.GroupID), b.topic)
			if err != nil {
				continue
			}
			var p int32
			var o, settled int64
			_, err = pgx.ForEachRow(rows, []any{&p, &o, &settled}, func() error {
				if settled != o {
					report("partition %d: offset %d committed with only %d offsets below it settled in Postgres", p, o, settled)
				}
				return nil
			})
			if err == nil {
				samples++
			}
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
			t.Logf("watchCommitted: %d samples", samples)
			for i, p := range problems {
				if i == 10 {
					t.Errorf("… and %d more", len(problems)-10)
					break
				}
				t.Error(p)
			}
			if samples == 0 {
				t.Error("watchCommitted: no sample taken")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitPartitionCommitted waits until the group committed partition p of
// b's topic up to at least end.
func waitPartitionCommitted(t *testing.T, b bundle, parts, p int, end int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		offsets, err := kafkatest.Committed(context.Background(), b.cfg.GroupID, b.topic, parts)
		if err == nil && offsets[p] >= end {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("partition %d committed at %d after %v, want %d (err %v)", p, offsets[p], timeout, end, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitMetric waits until the counter key (as collect names it) reaches want.
func waitMetric(t *testing.T, mp *metrictest.Provider, key string, want int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		counts, _, _ := collect(t, mp)
		if counts[key] >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %d after %v, want %d", key, counts[key], timeout, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
