package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/deadletter"
	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/pgtest"
	"github.com/exactlyhq/exactly/internal/runtest"
	"github.com/exactlyhq/exactly/outbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cli runs the command in-process and returns its exit status and output.
func cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append(args, "-dsn", pgtest.DSN()), &out, &errOut)
	return code, out.String(), errOut.String()
}

func cliJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	code, out, errOut := cli(t, append(args, "-json")...)
	if code != 0 {
		t.Fatalf("exactly %v: exit %d: %s", args, code, errOut)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("exactly %v: output is not JSON: %v\n%s", args, err, out)
	}
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	schema := pgtest.Schema(t, pool)
	if code, _, errOut := cli(t, "migrate", "status", "-schema", schema); code != exitNotMigrated || !strings.Contains(errOut, "not migrated") {
		t.Fatalf("status before up: exit %d, %q", code, errOut)
	}
	if code, _, errOut := cli(t, "status", "-schema", schema); code != exitNotMigrated || !strings.Contains(errOut, "exactly migrate up") {
		t.Fatalf("status of an unmigrated database: exit %d, %q", code, errOut)
	}
	var up struct{ Applied []map[string]any }
	cliJSON(t, &up, "migrate", "up", "-schema", schema)
	var st struct {
		Pending    int
		Migrations []map[string]any
	}
	cliJSON(t, &st, "migrate", "status", "-schema", schema)
	if st.Pending != 0 || len(up.Applied) < 5 || len(up.Applied) != len(st.Migrations) {
		t.Fatalf("applied %d migrations, status lists %d with %d pending; want all applied", len(up.Applied), len(st.Migrations), st.Pending)
	}
	cliJSON(t, &up, "migrate", "up", "-schema", schema)
	if len(up.Applied) != 0 {
		t.Fatalf("second up applied %v", up.Applied)
	}
	var down struct{ Reverted struct{ Component string } }
	cliJSON(t, &down, "migrate", "down", "-schema", schema)
	cliJSON(t, &st, "migrate", "status", "-schema", schema)
	if down.Reverted.Component == "" || st.Pending != 1 {
		t.Fatalf("down reverted %+v; %d pending, want exactly one step", down, st.Pending)
	}
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"migrate", "sql", "-schema", schema, "-outbox-table", `we"ird`}, &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), `CREATE TABLE "`+schema+`"."we""ird"`) {
		t.Fatalf("migrate sql: exit %d, %q\n%s", code, errOut.String(), out.String())
	}
}

func TestUsageAndConnectionErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{}, {"bogus"}, {"migrate"}, {"migrate", "sideways"}, {"prune"}, {"prune", "-older-than", "soon"}, {"prune", "-older-than", "2000000d"},
		{"dead-letters", "show"}, {"dead-letters", "replay"}, {"status", "extra"}, {"dead-letters", "show", "x"}, {"status", "-inbox-table", strings.Repeat("x", 70)}} {
		if code, _, _ := cli(t, args...); code != exitUsage {
			t.Errorf("exactly %v: exit %d, want %d", args, code, exitUsage)
		}
	}
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"status", "-dsn", "postgres://nobody:x@127.0.0.1:1/none?connect_timeout=2"}, &out, &errOut)
	// pgx tries twice (sslmode=prefer: TLS, then without): one reason, said once.
	if code != exitFailure || !strings.Contains(errOut.String(), "cannot reach Postgres at 127.0.0.1:1") ||
		strings.Count(errOut.String(), "connection refused") != 1 || strings.Count(errOut.String(), "\n") != 1 {
		t.Fatalf("wrong DSN: exit %d, %q; want one line saying Postgres cannot be reached", code, errOut.String())
	}
}

// bundle is a migrated schema with a topic, a consumer whose handler fails
// for tokens listed in poison, and helpers to run it.
type bundle struct {
	pool    *pgxpool.Pool
	schema  string
	topic   string
	cfg     consumer.Config
	effects string
	poison  atomic.Value // map[string]bool
}

func setup(t *testing.T) *bundle {
	t.Helper()
	pool := pgtest.Pool(t)
	b := &bundle{pool: pool, schema: pgtest.Schema(t, pool), topic: kafkatest.Topic(t, 1)}
	b.effects = pgx.Identifier{b.schema, "effects"}.Sanitize()
	b.cfg = consumer.Config{Brokers: kafkatest.Brokers(), GroupID: "cli-" + b.schema, Topics: []string{b.topic}, Pool: pool,
		Inbox: inbox.Config{Schema: b.schema}, BatchWait: 5 * time.Millisecond, RetryInitial: 5 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second, FetchMaxWait: 100 * time.Millisecond}
	b.poison.Store(map[string]bool{})
	if code, _, errOut := cli(t, "migrate", "up", "-schema", b.schema); code != 0 {
		t.Fatal(errOut)
	}
	if _, err := pool.Exec(context.Background(), "CREATE TABLE "+b.effects+" (token text NOT NULL, value text NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	return b
}

// consume runs the consumer until the group committed want messages.
func (b *bundle) consume(t *testing.T, want int64) {
	t.Helper()
	c, err := consumer.New(b.cfg, consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		if b.poison.Load().(map[string]bool)[m.Token.String()] {
			return consumer.Permanent(errors.New("bad order"))
		}
		_, err := tx.Exec(ctx, "INSERT INTO "+b.effects+" VALUES ($1, $2)", m.Token.String(), string(m.Value))
		return err
	}))
	if err != nil {
		t.Fatal(err)
	}
	stop := runtest.Background(t, "consumer", 60*time.Second, c.Run)
	deadline := time.Now().Add(60 * time.Second)
	for {
		offs, _ := kafkatest.Committed(context.Background(), b.cfg.GroupID, b.topic, 1)
		if offs[0] >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer committed %d, want %d", offs[0], want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
}

func (b *bundle) produce(t *testing.T, from, to int) {
	var msgs []kafka.Message
	for i := from; i < to; i++ {
		msgs = append(msgs, kafka.Message{Key: []byte("k"), Value: []byte(strconv.Itoa(i)),
			Headers: []kafka.Header{{Key: "Idempotency-Key", Value: []byte("order-" + strconv.Itoa(i))}}})
	}
	kafkatest.Produce(t, kafkatest.Writer(t, b.topic), msgs...)
}

func (b *bundle) effectCount(t *testing.T, token string) int {
	var n int
	if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+b.effects+" WHERE token = $1", token).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDeadLetterReplayOnce: a message dead-lettered by a failing handler is
// replayed through the outbox after the fix. Replaying twice, or while
// another replay runs, publishes it once; the consumer applies it once.
func TestDeadLetterReplayOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.poison.Store(map[string]bool{"order-3": true, "order-7": true})
	b.produce(t, 0, 10)
	b.consume(t, 10)

	var list []deadLetter
	cliJSON(t, &list, "dead-letters", "list", "-schema", b.schema, "-reason", "permanent")
	if len(list) != 2 || list[0].Token != "order-3" || list[0].Scope != b.cfg.GroupID {
		t.Fatalf("dead letters %+v, want order-3 and order-7", list)
	}
	var shown deadLetter
	cliJSON(t, &shown, "dead-letters", "show", "-schema", b.schema, strconv.FormatInt(list[0].ID, 10))
	if string(shown.Value) != "3" || shown.Headers["Idempotency-Key"] != "order-3" {
		t.Fatalf("show: %+v", shown)
	}
	if code, _, _ := cli(t, "dead-letters", "show", "-schema", b.schema, "999999"); code != exitNotFound {
		t.Fatalf("show of a missing ID: exit %d", code)
	}
	for _, f := range []struct {
		args []string
		want int
	}{
		{[]string{"-scope", b.cfg.GroupID}, 2}, {[]string{"-scope", "another-group"}, 0},
		{[]string{"-since", "1h"}, 2}, {[]string{"-since", time.Now().Add(time.Minute).Format(time.RFC3339)}, 0},
		{[]string{"-until", "1h"}, 0}, {[]string{"-until", time.Now().Add(time.Minute).Format(time.RFC3339)}, 2},
		{[]string{"-limit", "1"}, 1},
	} {
		var got []deadLetter
		cliJSON(t, &got, append([]string{"dead-letters", "list", "-schema", b.schema}, f.args...)...)
		if len(got) != f.want {
			t.Errorf("list %v: %d dead letters, want %d", f.args, len(got), f.want)
		}
	}

	// Writers with 16 shards left a row in shard 4 or above: a replay with
	// the default -shards 4 would shard keys differently, and is refused.
	wide, err := outbox.New(outbox.Config{Schema: b.schema, Shards: 16})
	if err != nil {
		t.Fatal(err)
	}
	key := 0
	for (outbox.Config{Shards: 16}).ShardOf([]byte(strconv.Itoa(key)), "") < 4 {
		key++
	}
	if _, err := wide.Enqueue(context.Background(), b.pool, outbox.Message{Topic: b.topic, Key: []byte(strconv.Itoa(key))}); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := cli(t, "dead-letters", "replay", "-schema", b.schema, strconv.FormatInt(list[0].ID, 10)); code != exitFailure || !strings.Contains(errOut, "pass -shards") {
		t.Fatalf("replay with -shards below the writers': exit %d, %q", code, errOut)
	}
	if _, err := b.pool.Exec(context.Background(), "DELETE FROM "+pgx.Identifier{b.schema, "outbox"}.Sanitize()); err != nil {
		t.Fatal(err)
	}

	// Discard order-7; replay order-3 from two terminals at once, then once
	// more.
	var res map[string]any
	cliJSON(t, &res, "dead-letters", "discard", "-schema", b.schema, strconv.FormatInt(list[1].ID, 10))
	id := strconv.FormatInt(list[0].ID, 10)
	if codes := concurrently(t, 2, "dead-letters", "replay", "-schema", b.schema, id); codes[0]+codes[exitNotFound] != 2 || codes[0] < 1 {
		t.Fatalf("two concurrent replays exited %v, want one success and otherwise not found", codes)
	}
	if code, _, _ := cli(t, "dead-letters", "replay", "-schema", b.schema, id); code != exitNotFound {
		t.Fatalf("another replay: exit %d, want %d (already resolved)", code, exitNotFound)
	}
	var outboxRows int
	if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{b.schema, "outbox"}.Sanitize()).Scan(&outboxRows); err != nil || outboxRows != 1 {
		t.Fatalf("outbox holds %d rows (err %v), want the one replay", outboxRows, err)
	}
	cliJSON(t, &list, "dead-letters", "list", "-schema", b.schema)
	if len(list) != 0 {
		t.Fatalf("unresolved after replay and discard: %+v", list)
	}
	cliJSON(t, &list, "dead-letters", "list", "-schema", b.schema, "-all")
	if len(list) != 2 || list[0].Resolution != "replayed" || list[1].Resolution != "discarded" {
		t.Fatalf("resolved list: %+v", list)
	}

	// The fix is deployed; the relay publishes the replay; the consumer
	// applies it once.
	b.poison.Store(map[string]bool{})
	stop := runRelay(t, b.pool, outbox.RelayConfig{Outbox: outbox.Config{Schema: b.schema}, Brokers: kafkatest.Brokers(), PollInterval: 100 * time.Millisecond})
	b.consume(t, 11)
	stop()
	if n := b.effectCount(t, "order-3"); n != 1 {
		t.Fatalf("order-3 applied %d times after replay, want 1", n)
	}
	if n := b.effectCount(t, "order-7"); n != 0 {
		t.Fatalf("discarded order-7 applied %d times", n)
	}
}

// TestReplayWithoutUsableToken: dead letters whose message had no usable
// Idempotency-Key (none, one too long, the header twice) are replayed with
// one token derived from the message's topic, partition and offset, the bad
// headers dropped; a dead letter with a token of its own (in another case,
// or repeated in a dead letter written before repeated headers were refused)
// keeps it, in one header. The consumer then applies each replay once and
// dead-letters none again.
func TestReplayWithoutUsableToken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	hdrs := func(kv ...string) []kafka.Header {
		var hs []kafka.Header
		for i := 0; i < len(kv); i += 2 {
			hs = append(hs, kafka.Header{Key: kv[i], Value: []byte(kv[i+1])})
		}
		return hs
	}
	kafkatest.Produce(t, kafkatest.Writer(t, b.topic),
		kafka.Message{Key: []byte("k"), Value: []byte("0"), Headers: hdrs("Idempotency-Key", strings.Repeat("x", 2000), "trace", "t0")}, // invalid_token: too long
		kafka.Message{Key: []byte("k"), Value: []byte("1"), Headers: hdrs("Idempotency-Key", "a", "idempotency-key", "b")},              // invalid_token: twice
		kafka.Message{Key: []byte("k"), Value: []byte("2")},                                                                             // no_token
		kafka.Message{Key: []byte("k"), Value: []byte("3"), Headers: hdrs("idempotency-key", "order-3")},                                // permanent, lower case
		kafka.Message{Key: []byte("k"), Value: []byte("4"), Headers: hdrs("Idempotency-Key", "order-4", "Idempotency-Key", "order-4b", "old", "")},
	)
	// The message marked "old" is read as consumers did before repeated
	// headers were refused: the first one.
	b.cfg.Token = consumer.TokenSourceFunc(func(m kafka.Message) (inbox.Token, error) {
		if len(m.Headers) == 3 && m.Headers[2].Key == "old" {
			return inbox.ParseToken(string(m.Headers[0].Value))
		}
		return consumer.FromHeader("").Token(m)
	})
	b.poison.Store(map[string]bool{"order-3": true, "order-4": true})
	b.consume(t, 5)

	var list []deadLetter
	cliJSON(t, &list, "dead-letters", "list", "-schema", b.schema)
	reasons := map[int64]string{}
	for _, d := range list {
		reasons[d.Offset] = d.Reason
	}
	if want := map[int64]string{0: consumer.ReasonInvalidToken, 1: consumer.ReasonInvalidToken, 2: consumer.ReasonNoToken, 3: consumer.ReasonPermanent, 4: consumer.ReasonPermanent}; !maps.Equal(reasons, want) {
		t.Fatalf("dead letters by offset %v, want %v", reasons, want)
	}
	var res struct{ Replayed []int64 }
	cliJSON(t, &res, "dead-letters", "replay", "-schema", b.schema, "-since", "1h")
	if len(res.Replayed) != 5 {
		t.Fatalf("replayed %v, want 5", res)
	}

	// The outbox rows: one token each, derived or the message's own.
	rows, err := b.pool.Query(context.Background(), "SELECT message_id::text, headers FROM "+pgx.Identifier{b.schema, "outbox"}.Sanitize()+" ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	var queued []string
	var id string
	var headers []struct {
		Key   string
		Value []byte
	}
	if _, err := pgx.ForEachRow(rows, []any{&id, &headers}, func() error {
		tok := id // published as the Idempotency-Key when no header has one
		n := 0
		for _, h := range headers {
			if strings.EqualFold(h.Key, exactly.Header) {
				if h.Key != exactly.Header {
					t.Errorf("outbox row %s: token header spelled %q; the relay would add a second", id, h.Key)
				}
				tok = string(h.Value)
				n++
			}
		}
		if n > 1 {
			t.Errorf("outbox row %s: %d token headers %+v", id, n, headers)
		}
		queued = append(queued, tok)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{deadletter.ReplayID(b.topic, 0, 0), deadletter.ReplayID(b.topic, 0, 1), deadletter.ReplayID(b.topic, 0, 2), "order-3", "order-4"}
	if !slices.Equal(queued, want) {
		for i := range queued {
			queued[i] = shorten(queued[i], 40)
		}
		t.Fatalf("outbox tokens %q, want %q", queued, want)
	}

	// Published and consumed (fix deployed): each applied once, none
	// dead-lettered again.
	b.cfg.Token = nil
	b.poison.Store(map[string]bool{})
	stop := runRelay(t, b.pool, outbox.RelayConfig{Outbox: outbox.Config{Schema: b.schema}, Brokers: kafkatest.Brokers(), PollInterval: 100 * time.Millisecond})
	b.consume(t, 10)
	stop()
	for _, tok := range want {
		if n := b.effectCount(t, tok); n != 1 {
			t.Errorf("token %s applied %d times, want 1", tok, n)
		}
	}
	cliJSON(t, &list, "dead-letters", "list", "-schema", b.schema)
	if len(list) != 0 {
		t.Fatalf("replays dead-lettered again: %+v", list)
	}
}

// concurrently runs the command n times at once and counts exit statuses.
func concurrently(t *testing.T, n int, args ...string) map[int]int {
	t.Helper()
	codes := make(chan int, n)
	for range n {
		go func() {
			var out, errOut bytes.Buffer
			codes <- run(context.Background(), append(args, "-dsn", pgtest.DSN()), &out, &errOut)
		}()
	}
	got := map[int]int{}
	for range n {
		got[<-codes]++
	}
	return got
}

// TestOutboxDeadLetters: a committed message Kafka rejects (its topic does
// not exist) is dead-lettered by the relay; once the topic exists, replaying
// it (from two terminals at once) publishes it once, with its original
// message id; a discarded one is never published.
func TestOutboxDeadLetters(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	schema := pgtest.Schema(t, pool)
	if code, _, errOut := cli(t, "migrate", "up", "-schema", schema); code != 0 {
		t.Fatal(errOut)
	}
	ob, err := outbox.New(outbox.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	missing := "created-later-" + schema
	ids, err := ob.Enqueue(context.Background(), pool,
		outbox.Message{Topic: missing, Key: []byte("order-1"), Value: []byte("replay me"), Headers: []kafka.Header{{Key: "trace", Value: []byte("t1")}}},
		outbox.Message{Topic: missing, Key: []byte("order-2"), Value: []byte("discard me")})
	if err != nil {
		t.Fatal(err)
	}
	relayCfg := outbox.RelayConfig{Outbox: outbox.Config{Schema: schema}, Brokers: kafkatest.Brokers(), PollInterval: 100 * time.Millisecond,
		MaxRejections: 1, RetryInitial: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond}
	stop := runRelay(t, pool, relayCfg)
	var list []outboxDeadLetter
	for deadline := time.Now().Add(60 * time.Second); len(list) < 2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("outbox dead letters: %+v, want 2", list)
		}
		cliJSON(t, &list, "outbox-dead-letters", "list", "-schema", schema, "-topic", missing)
	}
	stop()
	if list[0].Reason != outbox.ReasonUnknownTopic || list[0].MessageID != ids[0] || list[0].Rejections != 1 || string(list[0].Key) != "order-1" {
		t.Fatalf("dead letter %+v, want order-1, unknown_topic, message id %s, 1 rejection", list[0], ids[0])
	}
	var shown outboxDeadLetter
	cliJSON(t, &shown, "outbox-dead-letters", "show", "-schema", schema, strconv.FormatInt(list[0].ID, 10))
	if string(shown.Value) != "replay me" || shown.Headers["trace"] != "t1" {
		t.Fatalf("show: %+v", shown)
	}
	for _, f := range []struct {
		args []string
		want int
	}{
		{[]string{"-topic", "other"}, 0}, {[]string{"-reason", outbox.ReasonTooLarge}, 0}, {[]string{"-since", "1h"}, 2}, {[]string{"-until", "1h"}, 0},
	} {
		var got []outboxDeadLetter
		cliJSON(t, &got, append([]string{"outbox-dead-letters", "list", "-schema", schema}, f.args...)...)
		if len(got) != f.want {
			t.Errorf("list %v: %d, want %d", f.args, len(got), f.want)
		}
	}
	var st status
	cliJSON(t, &st, "status", "-schema", schema)
	if len(st.OutboxDeadLetters) != 1 || st.OutboxDeadLetters[0].Count != 2 {
		t.Errorf("status counts outbox dead letters %+v, want 2 unknown_topic", st.OutboxDeadLetters)
	}

	if err := kafkatest.CreateTopic(context.Background(), missing, 1); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kafkatest.DeleteTopic(context.Background(), missing) })
	// A shard count other than the writers' would put the key in another
	// shard than its later rows: refused.
	wrong := 2
	for (outbox.Config{Shards: wrong}).ShardOf([]byte("order-1"), "") == (outbox.Config{}).ShardOf([]byte("order-1"), "") {
		wrong++
	}
	if code, _, errOut := cli(t, "outbox-dead-letters", "replay", "-schema", schema, "-shards", strconv.Itoa(wrong), strconv.FormatInt(list[0].ID, 10)); code != exitFailure || !strings.Contains(errOut, "pass -shards") {
		t.Fatalf("replay with -shards %d: exit %d, %q", wrong, code, errOut)
	}
	var res map[string]any
	cliJSON(t, &res, "outbox-dead-letters", "discard", "-schema", schema, strconv.FormatInt(list[1].ID, 10))
	if codes := concurrently(t, 2, "outbox-dead-letters", "replay", "-schema", schema, "-reason", outbox.ReasonUnknownTopic); codes[0] != 2 {
		t.Fatalf("two concurrent replays by filter exited %v, want both 0", codes)
	}
	if code, _, _ := cli(t, "outbox-dead-letters", "replay", "-schema", schema, strconv.FormatInt(list[0].ID, 10)); code != exitNotFound {
		t.Fatalf("replay of a replayed dead letter: exit %d, want %d", code, exitNotFound)
	}
	cliJSON(t, &list, "outbox-dead-letters", "list", "-schema", schema, "-all")
	if len(list) != 2 || list[0].Resolution != "replayed" || list[1].Resolution != "discarded" {
		t.Fatalf("resolved: %+v", list)
	}
	cliJSON(t, &st, "status", "-schema", schema)
	if len(st.OutboxDeadLetters) != 0 {
		t.Errorf("status after resolving: %+v", st.OutboxDeadLetters)
	}

	var queued []string
	rows, err := pool.Query(context.Background(), "SELECT message_id::text FROM "+pgx.Identifier{schema, "outbox"}.Sanitize())
	if err != nil {
		t.Fatal(err)
	}
	if queued, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if len(queued) != 1 || queued[0] != ids[0] {
		t.Fatalf("outbox holds %v after the replays, want only %s", queued, ids[0])
	}
	runRelay(t, pool, relayCfg)
	got := kafkatest.ReadAll(t, missing, 1, 1, 60*time.Second)
	if string(got[0].Value) != "replay me" || kafkatest.Header(got[0], exactly.Header) != ids[0] || kafkatest.Header(got[0], "trace") != "t1" {
		t.Fatalf("published %q with id %q, want the replay with id %s", got[0].Value, kafkatest.Header(got[0], exactly.Header), ids[0])
	}
}

// runRelay runs a relay until the test ends or stop is called.
func runRelay(t *testing.T, pool *pgxpool.Pool, cfg outbox.RelayConfig) (stop func()) {
	t.Helper()
	r, err := outbox.NewRelay(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return runtest.Background(t, "relay", 30*time.Second, r.Run)
}

func TestStatusAndPrune(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.produce(t, 0, 20)
	b.consume(t, 20)
	b.produce(t, 20, 25) // five messages of lag
	ob, err := outbox.New(outbox.Config{Schema: b.schema})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ob.Enqueue(context.Background(), b.pool, outbox.Message{Topic: b.topic, Key: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	var st status
	cliJSON(t, &st, "status", "-schema", b.schema, "-brokers", strings.Join(kafkatest.Brokers(), ","))
	if len(st.Inbox) != 1 || st.Inbox[0].Scope != b.cfg.GroupID || st.Inbox[0].Tokens != 20 {
		t.Errorf("inbox status %+v, want 20 tokens in %s", st.Inbox, b.cfg.GroupID)
	}
	var backlog int64
	for _, s := range st.Outbox {
		backlog += s.Backlog
	}
	if backlog != 1 || len(st.Outbox) != outbox.ShardsDefault {
		t.Errorf("outbox status %+v, want backlog 1", st.Outbox)
	}
	if len(st.Lag) != 1 || st.Lag[0].Lag != 5 || st.Lag[0].Committed != 20 {
		t.Errorf("lag %+v (error %q), want 5 behind 20", st.Lag, st.LagError)
	}
	code, out, _ := cli(t, "status", "-schema", b.schema)
	if code != 0 || !strings.Contains(out, "NO RELAY") || !strings.Contains(out, fmt.Sprintf("%q", b.cfg.GroupID)) {
		t.Errorf("human status: exit %d\n%s", code, out)
	}

	if _, err := b.pool.Exec(context.Background(), "UPDATE "+pgx.Identifier{b.schema, "inbox"}.Sanitize()+" SET processed_at = now() - interval '40 days' WHERE kafka_offset < 15"); err != nil {
		t.Fatal(err)
	}
	var pr struct {
		Total  int64
		DryRun bool `json:"dry_run"`
	}
	cliJSON(t, &pr, "prune", "-schema", b.schema, "-older-than", "30d", "-dry-run")
	if pr.Total != 15 || !pr.DryRun {
		t.Fatalf("dry run: %+v, want 15", pr)
	}
	cliJSON(t, &pr, "prune", "-schema", b.schema, "-older-than", "30d", "-batch", "4")
	cliJSON(t, &st, "status", "-schema", b.schema)
	if pr.Total != 15 || st.Inbox[0].Tokens != 5 {
		t.Fatalf("prune deleted %d, %d tokens left; want 15 and 5", pr.Total, st.Inbox[0].Tokens)
	}
}

// TestStatusOutsideShards: rows that writers with more shards put beyond the
// -shards the status is asked with are listed and warned about.
func TestStatusOutsideShards(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ob, err := outbox.New(outbox.Config{Schema: b.schema, Shards: 16})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		if _, err := ob.Enqueue(context.Background(), b.pool, outbox.Message{Topic: b.topic, Key: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	code, out, _ := cli(t, "status", "-schema", b.schema, "-shards", "4")
	if code != 0 || !strings.Contains(out, "NO RELAY (outside -shards 4)") || !strings.Contains(out, "at or above -shards 4: writers use more shards than -shards") {
		t.Errorf("status: exit %d\n%s", code, out)
	}
}

// TestPruneFloorAndDatabaseClock: prune refuses an -older-than below
// pruneFloor unless -force, and computes its cut-off from the database's
// clock. The database's now() is moved two days back for the CLI's session
// (a now() function in a schema ahead of pg_catalog on its search_path): a
// cut-off from the client's clock would count and delete more.
func TestPruneFloorAndDatabaseClock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t)
	schema := pgtest.Schema(t, pool)
	if code, _, errOut := cli(t, "migrate", "up", "-schema", schema); code != 0 {
		t.Fatal(errOut)
	}
	store, err := inbox.New(pool, inbox.Config{Schema: schema, Scope: "s"})
	if err != nil {
		t.Fatal(err)
	}
	ages := map[string]string{"3d": "3 days", "1d": "1 day", "10s": "10 seconds", "future": "-1 hour"}
	for name := range ages {
		inTx(t, pool, func(tx pgx.Tx) error {
			_, err := store.Claim(ctx, tx, inbox.Request{Token: mustToken(t, name), Fingerprint: []byte(name)})
			return err
		})
	}
	table := pgx.Identifier{schema, "inbox"}.Sanitize()
	for name, age := range ages {
		if _, err := pool.Exec(ctx, "UPDATE "+table+" SET processed_at = pg_catalog.now() - $2::interval WHERE fingerprint = $1",
			[]byte(name), age); err != nil {
			t.Fatal(err)
		}
	}
	left := func() int {
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Below the floor: refused, nothing deleted.
	for _, age := range []string{"1s", "59m", "0.5h"} {
		code, _, errOut := cli(t, "prune", "-schema", schema, "-older-than", age)
		if code != exitUsage || !strings.Contains(errOut, "-older-than "+age+" is below 1h") || !strings.Contains(errOut, "-force") {
			t.Errorf("prune -older-than %s: exit %d, %q; want a usage error naming the floor and -force", age, code, errOut)
		}
	}
	if n := left(); n != 4 {
		t.Fatalf("%d tokens left after refused prunes, want 4", n)
	}

	// The database's clock two days behind the client's.
	if _, err := pool.Exec(ctx, "CREATE FUNCTION "+pgx.Identifier{schema, "now"}.Sanitize()+
		"() RETURNS timestamptz LANGUAGE sql STABLE AS $$ SELECT pg_catalog.now() - interval '2 days' $$"); err != nil {
		t.Fatal(err)
	}
	skewed := pgtest.DSN() + "&search_path=" + url.QueryEscape(pgx.Identifier{schema}.Sanitize()+",pg_catalog")
	prune := func(args ...string) (pr struct {
		Before time.Time
		Total  int64
	}) {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := run(ctx, append(append([]string{"prune", "-schema", schema, "-json"}, args...), "-dsn", skewed), &out, &errOut); code != 0 {
			t.Fatalf("prune %v: exit %d: %s", args, code, errOut.String())
		}
		if err := json.Unmarshal(out.Bytes(), &pr); err != nil {
			t.Fatalf("prune %v: %v\n%s", args, err, out.String())
		}
		return pr
	}
	var want time.Time
	if err := pool.QueryRow(ctx, "SELECT pg_catalog.now() - interval '2 days 2 hours'").Scan(&want); err != nil {
		t.Fatal(err)
	}
	pr := prune("-older-than", "2h", "-dry-run")
	if pr.Total != 1 || pr.Before.Sub(want).Abs() > time.Minute {
		t.Fatalf("dry run with the database two days behind: %d tokens before %s; want 1 (the 3-day-old) before %s", pr.Total, pr.Before, want)
	}
	if pr = prune("-older-than", "2h"); pr.Total != 1 || left() != 3 {
		t.Fatalf("prune with the database two days behind deleted %d, left %d; want 1 and 3", pr.Total, left())
	}
	// At the floor, and below it with -force.
	if pr = prune("-older-than", "1h"); pr.Total != 0 {
		t.Fatalf("prune -older-than 1h deleted %d, want 0", pr.Total)
	}
	if pr = prune("-older-than", "1s", "-force"); pr.Total != 0 {
		t.Fatalf("prune -older-than 1s -force with the database two days behind deleted %d, want 0", pr.Total)
	}
	var res struct{ Total int64 }
	cliJSON(t, &res, "prune", "-schema", schema, "-older-than", "1s", "-force")
	if res.Total != 2 || left() != 1 {
		t.Fatalf("prune -older-than 1s -force deleted %d, left %d; want 2 (1d and 10s) and the future one", res.Total, left())
	}
}

func mustToken(t *testing.T, s string) inbox.Token {
	t.Helper()
	tk, err := inbox.ParseToken(s)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// inTx runs fn in a transaction and commits it.
func inTx(t *testing.T, pool *pgxpool.Pool, fn func(pgx.Tx) error) {
	t.Helper()
	if err := pgx.BeginFunc(context.Background(), pool, fn); err != nil {
		t.Fatal(err)
	}
}

// TestStatusOverSASL: status reads consumer lag through the broker's SASL
// listeners, plaintext (only with -kafka-sasl-plaintext-ok) and TLS
// (-kafka-ca), with -kafka-sasl and the password from $KAFKA_SASL_PASSWORD;
// a wrong password is reported, a missing one refused, a broker certificate
// of an untrusted CA reported. Not parallel: it sets the environment.
func TestStatusOverSASL(t *testing.T) {
	b := setup(t)
	b.produce(t, 0, 10)
	b.consume(t, 10)
	b.produce(t, 10, 13) // three messages of lag
	for _, l := range kafkatest.SASLListeners(t) {
		t.Run(l.Name, func(t *testing.T) {
			base := []string{"status", "-schema", b.schema, "-brokers", strings.Join(l.Brokers, ","), "-group", b.cfg.GroupID,
				"-kafka-sasl", "plain", "-kafka-user", kafkatest.SASLUser}
			args := slices.Clone(base)
			if l.TLS != nil {
				args = append(args, "-kafka-ca", kafkatest.TLSCAFile(t))
			} else {
				// PLAIN without TLS is refused unless explicitly allowed.
				t.Setenv("KAFKA_SASL_PASSWORD", kafkatest.SASLPassword)
				if code, _, errOut := cli(t, args...); code != exitUsage || !strings.Contains(errOut, "clear text") {
					t.Fatalf("PLAIN without TLS and without -kafka-sasl-plaintext-ok: exit %d, %q", code, errOut)
				}
				args = append(args, "-kafka-sasl-plaintext-ok")
			}
			t.Setenv("KAFKA_SASL_PASSWORD", "")
			if code, _, errOut := cli(t, args...); code != exitUsage || !strings.Contains(errOut, "KAFKA_SASL_PASSWORD") {
				t.Fatalf("without a password: exit %d, %q", code, errOut)
			}
			t.Setenv("KAFKA_SASL_PASSWORD", kafkatest.SASLPassword)
			var st status
			cliJSON(t, &st, append(args, "-json")...)
			if len(st.Lag) != 1 || st.Lag[0].Lag != 3 || st.Lag[0].Committed != 10 {
				t.Fatalf("lag %+v (error %q), want 3 behind 10", st.Lag, st.LagError)
			}
			if l.TLS != nil {
				// -kafka-tls alone trusts the system roots only.
				if code, _, errOut := cli(t, append(base, "-kafka-tls")...); code != exitFailure || !strings.Contains(errOut, "certificate signed by unknown authority") {
					t.Fatalf("without the CA: exit %d, %q", code, errOut)
				}
			}
			t.Setenv("KAFKA_SASL_PASSWORD", "wrong")
			if code, _, errOut := cli(t, args...); code != exitFailure || !strings.Contains(errOut, "SASL Authentication Failed") {
				t.Fatalf("wrong password: exit %d, %q", code, errOut)
			}
		})
	}
}

// runCLI runs the command in-process with exactly args (no -dsn added).
func runCLI(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestHelp: "exactly help CMD" and "exactly CMD -h" print the same text to
// stdout: the usage line with the command's positional arguments, what it
// does, and the flags it takes, no other command's. The password in
// $DATABASE_URL is never shown. Not parallel: it sets the environment.
func TestHelp(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://someone:hunter2@db.example:5432/x")
	db := []string{"dsn", "json", "schema"}
	tables := []string{"dead-letter-table", "inbox-layout", "inbox-table", "outbox-table"}
	kafkaFlags := []string{"brokers", "group", "kafka-ca", "kafka-sasl", "kafka-sasl-plaintext-ok", "kafka-tls", "kafka-user"}
	filters := []string{"limit", "reason", "since", "until"}
	want := map[string]struct {
		synopsis string
		flags    []string
	}{
		"migrate up":                  {"[flags]", slices.Concat(db, tables)},
		"migrate down":                {"[flags]", slices.Concat(db, tables)},
		"migrate status":              {"[flags]", slices.Concat(db, tables)},
		"migrate sql":                 {"[flags]", slices.Concat([]string{"json", "schema"}, tables)},
		"migrate partition-inbox":     {"[flags]", slices.Concat(db, []string{"inbox-layout", "inbox-table"})},
		"status":                      {"[flags]", slices.Concat(db, tables, kafkaFlags, []string{"shards"})},
		"dead-letters list":           {"[flags]", slices.Concat(db, filters, []string{"dead-letter-table", "scope", "all"})},
		"dead-letters show":           {"[flags] ID", slices.Concat(db, []string{"dead-letter-table"})},
		"dead-letters replay":         {"[flags] [ID...]", slices.Concat(db, filters, []string{"dead-letter-table", "outbox-table", "shards", "scope", "dry-run"})},
		"dead-letters discard":        {"[flags] [ID...]", slices.Concat(db, filters, []string{"dead-letter-table", "outbox-table", "scope", "dry-run"})},
		"outbox-dead-letters list":    {"[flags]", slices.Concat(db, filters, []string{"outbox-table", "topic", "all"})},
		"outbox-dead-letters show":    {"[flags] ID", slices.Concat(db, []string{"outbox-table"})},
		"outbox-dead-letters replay":  {"[flags] [ID...]", slices.Concat(db, filters, []string{"outbox-table", "shards", "topic", "dry-run"})},
		"outbox-dead-letters discard": {"[flags] [ID...]", slices.Concat(db, filters, []string{"outbox-table", "topic", "dry-run"})},
		"console":                     {"[flags]", slices.Concat(db, tables, kafkaFlags, []string{"shards", "listen", "path", "read-only"})},
		"prune": {"-older-than AGE [flags]", slices.Concat(db, []string{"dead-letter-table", "inbox-layout", "inbox-table", "outbox-table", "older-than",
			"dead-letters-older-than", "published-older-than", "scope", "batch", "partition-period", "partitions-ahead", "dry-run", "force"})},
		"version": {"[flags]", []string{"json"}},
	}
	flagRE := regexp.MustCompile(`(?m)^  -([a-z-]+)`)
	for _, c := range commands {
		w, ok := want[c.name]
		if !ok {
			t.Errorf("command %q: no expected help here; add it", c.name)
			continue
		}
		words := strings.Fields(c.name)
		code, help, errOut := runCLI(slices.Concat([]string{"help"}, words)...)
		if code != exitOK || errOut != "" {
			t.Errorf("exactly help %s: exit %d, stderr %q", c.name, code, errOut)
		}
		code, dashH, errOut := runCLI(slices.Concat(words, []string{"-h"})...)
		if code != exitOK || errOut != "" || dashH != help {
			t.Errorf("exactly %s -h: exit %d, stderr %q, and stdout differs from exactly help %s:\n%s", c.name, code, errOut, c.name, dashH)
		}
		if line := "Usage: exactly " + c.name + " " + w.synopsis + "\n"; !strings.HasPrefix(help, line) {
			t.Errorf("exactly help %s starts %q, want %q", c.name, strings.SplitN(help, "\n", 2)[0], line)
		}
		var got []string
		for _, m := range flagRE.FindAllStringSubmatch(help, -1) {
			got = append(got, m[1])
		}
		if wf := slices.Sorted(slices.Values(w.flags)); !slices.Equal(got, wf) {
			t.Errorf("exactly help %s lists flags %v, want %v", c.name, got, wf)
		}
		if strings.Contains(help, "hunter2") {
			t.Errorf("exactly help %s shows the password in $DATABASE_URL:\n%s", c.name, help)
		}
	}
	for _, g := range groups {
		code, help, _ := runCLI("help", g)
		code2, dashH, _ := runCLI(g, "-h")
		if code != exitOK || code2 != exitOK || help != dashH || !strings.HasPrefix(help, "Usage: exactly "+g+" COMMAND") {
			t.Errorf("exactly help %s (exit %d) and exactly %s -h (exit %d) differ or lack the usage line:\n%s\n%s", g, code, g, code2, help, dashH)
		}
		for _, c := range commands {
			if sub, ok := strings.CutPrefix(c.name, g+" "); ok && !strings.Contains(help, "\n  "+sub+" ") {
				t.Errorf("exactly help %s does not list %s:\n%s", g, sub, help)
			}
		}
	}
	code, overview, _ := runCLI("help")
	for _, c := range commands {
		if !strings.Contains(overview, "\n  "+c.name+" ") {
			t.Errorf("exactly help does not list %s", c.name)
		}
	}
	if code != exitOK || !strings.Contains(overview, "Exit status: 0 success, 1 failure, 2 bad usage, 3 database not migrated,\n4 not found") {
		t.Errorf("exactly help: exit %d\n%s", code, overview)
	}
	if code, _, errOut := runCLI("help", "nonsense"); code != exitUsage || !strings.Contains(errOut, `unknown command "nonsense"`) {
		t.Errorf("exactly help nonsense: exit %d, %q", code, errOut)
	}
}

// TestVersion: the module version from the build information ("(devel)"
// in a test binary, as in any build from a checkout) and the Go version.
func TestVersion(t *testing.T) {
	t.Parallel()
	info, ok := debug.ReadBuildInfo()
	if !ok || info.Main.Version == "" {
		t.Fatalf("no build information in the test binary: %v", info)
	}
	code, out, errOut := runCLI("version")
	want := fmt.Sprintf("exactly %s, built with %s for %s/%s\n", info.Main.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if code != exitOK || out != want || errOut != "" {
		t.Errorf("exactly version: exit %d, %q (stderr %q), want %q", code, out, errOut, want)
	}
	var v struct{ Version, Go, Platform string }
	code, out, _ = runCLI("version", "-json")
	if err := json.Unmarshal([]byte(out), &v); code != exitOK || err != nil || v.Version != info.Main.Version || v.Go != runtime.Version() || v.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("exactly version -json: exit %d, %+v (%v)\n%s", code, v, err, out)
	}
	for _, args := range [][]string{{"version", "extra"}, {"version", "-dsn", pgtest.DSN()}} {
		if code, _, _ := runCLI(args...); code != exitUsage {
			t.Errorf("exactly %v: exit %d, want %d", args, code, exitUsage)
		}
	}
}

// TestMigrateSQLNeedsNoDatabase: migrate sql prints the migrations without
// connecting to $DATABASE_URL, here a listener that counts connections; the
// control, migrate status, does connect to it. Not parallel: it sets the
// environment.
func TestMigrateSQLNeedsNoDatabase(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	t.Setenv("DATABASE_URL", "postgres://someone:secret@"+ln.Addr().String()+"/x?connect_timeout=2")

	code, out, errOut := runCLI("migrate", "sql")
	for _, table := range []string{`"exactly"."inbox"`, `"exactly"."dead_letters"`, `"exactly"."outbox"`} {
		if !strings.Contains(out, "CREATE TABLE "+table) {
			t.Errorf("migrate sql does not create %s", table)
		}
	}
	if code != exitOK || errOut != "" {
		t.Errorf("migrate sql: exit %d, %q", code, errOut)
	}
	var scripts []struct{ Component, Schema, Table, SQL string }
	code, out, _ = runCLI("migrate", "sql", "-json", "-schema", "shop")
	if err := json.Unmarshal([]byte(out), &scripts); code != exitOK || err != nil || len(scripts) != 3 || scripts[0].Schema != "shop" || !strings.Contains(scripts[2].SQL, `CREATE TABLE "shop"."outbox"`) {
		t.Errorf("migrate sql -json: exit %d, %v\n%s", code, err, out)
	}
	if code, _, errOut := runCLI("migrate", "sql", "-dsn", "postgres://elsewhere/x"); code != exitUsage || !strings.Contains(errOut, "-dsn") {
		t.Errorf("migrate sql -dsn: exit %d, %q; want a usage error: it reads no database", code, errOut)
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("migrate sql connected to $DATABASE_URL %d times", n)
	}
	if code, _, _ := runCLI("migrate", "status"); code != exitFailure || accepted.Load() == 0 {
		t.Fatalf("control: migrate status exited %d after %d connections; want a failed connection to the listener", code, accepted.Load())
	}
}

// TestJSONErrors: under -json each error is one JSON object on stderr with
// the exit status as its code; without, one line (and a pointer to help
// for usage errors).
func TestJSONErrors(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	empty, migrated := pgtest.Schema(t, pool), pgtest.Schema(t, pool)
	if code, _, errOut := cli(t, "migrate", "up", "-schema", migrated); code != 0 {
		t.Fatal(errOut)
	}
	unreachable := "postgres://nobody:x@127.0.0.1:1/none?connect_timeout=2"
	for _, c := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"bogus"}, exitUsage, `unknown command "bogus"`},
		{[]string{"status", "-bogus"}, exitUsage, "flag provided but not defined: -bogus"},
		{[]string{"dead-letters", "show", "-schema", migrated}, exitUsage, "needs one ID"},
		{[]string{"prune", "-older-than", "1s", "-schema", migrated}, exitUsage, "below 1h"},
		{[]string{"status", "-dsn", unreachable}, exitFailure, "cannot reach Postgres at 127.0.0.1:1"},
		{[]string{"migrate", "status", "-schema", empty}, exitNotMigrated, "database not migrated"},
		{[]string{"dead-letters", "show", "-schema", migrated, "999999"}, exitNotFound, "dead letter 999999: not found"},
	} {
		args := slices.Clone(c.args)
		if !slices.Contains(args, "-dsn") && args[0] != "bogus" {
			args = append(args, "-dsn", pgtest.DSN())
		}
		code, out, errOut := runCLI(append(slices.Clone(args), "-json")...)
		var e struct {
			Error string
			Code  int
		}
		dec := json.NewDecoder(strings.NewReader(errOut))
		if err := dec.Decode(&e); err != nil || dec.More() || code != c.code || e.Code != c.code || !strings.Contains(e.Error, c.says) {
			t.Errorf("exactly %v -json: exit %d, stderr %q (%v); want one {\"error\": ...%q..., \"code\": %d}", c.args, code, errOut, err, c.says, c.code)
		}
		if out != "" && !json.Valid([]byte(out)) {
			t.Errorf("exactly %v -json: stdout is not JSON: %q", c.args, out)
		}
		code, _, errOut = runCLI(args...)
		lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
		if code != c.code || !strings.HasPrefix(lines[0], "exactly: ") || strings.Count(errOut, c.says) != 1 ||
			len(lines) > 2 || (len(lines) == 2) != (code == exitUsage) {
			t.Errorf("exactly %v: exit %d, stderr %q; want %q once, on one line (a second pointing to help for usage errors)", c.args, code, errOut, c.says)
		}
	}
	// -json given before a flag that does not parse still asks for JSON.
	if code, _, errOut := runCLI("status", "-json", "-bogus"); code != exitUsage || !json.Valid([]byte(errOut)) {
		t.Errorf("exactly status -json -bogus: exit %d, %q", code, errOut)
	}
	if code, _, errOut := runCLI("status", "-json=false", "-bogus"); code != exitUsage || json.Valid([]byte(errOut)) {
		t.Errorf("exactly status -json=false -bogus: exit %d, %q", code, errOut)
	}
}

// TestAuthenticationFailed: a wrong password is reported as what it is,
// once, not as a Postgres that cannot be reached.
func TestAuthenticationFailed(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(pgtest.DSN())
	if err != nil || u.User == nil {
		t.Fatalf("DATABASE_URL %q is not a postgres:// URL with a user: %v", pgtest.DSN(), err)
	}
	u.User = url.UserPassword(u.User.Username(), "wrong-"+pgtest.RandomSuffix())
	code, _, errOut := runCLI("status", "-dsn", u.String())
	if code != exitFailure || !strings.Contains(errOut, "authentication failed") || !strings.Contains(errOut, "SQLSTATE 28P01") ||
		strings.Contains(errOut, "cannot reach") || strings.Count(errOut, "\n") != 1 || strings.Count(errOut, "password authentication failed") != 1 {
		t.Errorf("wrong password: exit %d, %q; want authentication failed (28P01), once", code, errOut)
	}
	code, _, errOut = runCLI("status", "-json", "-dsn", u.String())
	if code != exitFailure || !strings.Contains(errOut, `"code":1`) || !strings.Contains(errOut, "authentication failed") {
		t.Errorf("wrong password, -json: exit %d, %q", code, errOut)
	}
}

// TestConnectError: how each failure to connect reads.
func TestConnectError(t *testing.T) {
	t.Parallel()
	cfg, err := pgx.ParseConfig("postgres://u:p@db.example:6432/shop")
	if err != nil {
		t.Fatal(err)
	}
	pg := func(code, msg string) error {
		return fmt.Errorf("failed to connect: %w", &pgconn.PgError{Severity: "FATAL", Code: code, Message: msg})
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{pg("28P01", `password authentication failed for user "u"`), `authentication failed at Postgres db.example:6432: password authentication failed for user "u" (SQLSTATE 28P01)`},
		{pg("28000", `no pg_hba.conf entry for host "10.1.2.3", user "u", database "shop", no encryption`), `authentication failed at Postgres db.example:6432: no pg_hba.conf entry`},
		{pg("3D000", `database "shop" does not exist`), `connection to Postgres at db.example:6432 (database "shop") refused: database "shop" does not exist (SQLSTATE 3D000)`},
		{errors.Join(errors.New("dial tcp: i/o timeout"), errors.New("dial tcp: i/o timeout")), "cannot reach Postgres at db.example:6432: dial tcp: i/o timeout"},
	} {
		if got := connectError(cfg, c.err).Error(); !strings.HasPrefix(got, c.want) || strings.Contains(got, "\n") {
			t.Errorf("connectError(%v) = %q, want it to start %q, on one line", c.err, got, c.want)
		}
	}
}

// syncBuffer is a bytes.Buffer safe to read while a command writes it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// serveConsole runs `exactly console` with args until the test ends and
// returns its address, from the line it prints.
func serveConsole(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	exited := make(chan int, 1)
	go func() { exited <- run(ctx, append([]string{"console", "-dsn", pgtest.DSN()}, args...), &out, &errOut) }()
	t.Cleanup(func() {
		cancel()
		if code := <-exited; code != exitOK {
			t.Errorf("exactly console exited %d: %s", code, errOut.String())
		}
	})
	addr := regexp.MustCompile(`exactly console: (http://\S+)`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := addr.FindStringSubmatch(out.String()); m != nil {
			return m[1]
		}
		select {
		case code := <-exited:
			exited <- code
			t.Fatalf("exactly console exited %d: %s%s", code, out.String(), errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("exactly console printed no address: %q", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func get(t *testing.T, url string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
		}
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

// TestConsole: `exactly console` serves the console; without credentials
// it refuses a non-loopback address, and on loopback admits only requests
// addressed to a loopback name; with a token it requires it. Not parallel:
// it sets the environment.
func TestConsole(t *testing.T) {
	b := setup(t)
	b.poison.Store(map[string]bool{"order-1": true})
	b.produce(t, 0, 2)
	b.consume(t, 2)
	t.Setenv(envConsoleUser, "")
	t.Setenv(envConsolePassword, "")
	t.Setenv(envConsoleToken, "")

	code, _, errOut := cli(t, "console", "-schema", b.schema, "-listen", "0.0.0.0:0")
	if code != exitUsage || !strings.Contains(errOut, "not a loopback address") {
		t.Fatalf("console on 0.0.0.0 without credentials: exit %d, %q", code, errOut)
	}
	code, _, errOut = cli(t, "console", "-schema", b.schema+"_none", "-listen", "127.0.0.1:0")
	if code != exitNotMigrated {
		t.Fatalf("console of an unmigrated schema: exit %d, %q", code, errOut)
	}

	url := serveConsole(t, "-schema", b.schema, "-listen", "127.0.0.1:0", "-brokers", strings.Join(kafkatest.Brokers(), ","), "-group", b.cfg.GroupID)
	code, page := get(t, url)
	if code != http.StatusOK || !strings.Contains(page, "1 dead letter of "+b.cfg.GroupID+" (permanent) waits") || !strings.Contains(page, b.cfg.GroupID+"</code> <span class=\"state\">Empty</span>") {
		t.Fatalf("overview: %d\n%s", code, page)
	}
	if code, _ := get(t, url, "Host", "rebound.example:80"); code != http.StatusUnauthorized {
		t.Errorf("a request addressed to another name: %d, want 401", code)
	}

	t.Setenv(envConsoleToken, "console-token")
	url = serveConsole(t, "-schema", b.schema, "-listen", "127.0.0.1:0", "-read-only")
	if code, _ := get(t, url+"api/overview"); code != http.StatusUnauthorized {
		t.Errorf("without the token: %d", code)
	}
	code, body := get(t, url+"api/dead-letters/consumer", "Authorization", "Bearer console-token")
	var list struct {
		DeadLetters []struct{ Token string } `json:"dead_letters"`
	}
	if err := json.Unmarshal([]byte(body), &list); code != http.StatusOK || err != nil || len(list.DeadLetters) != 1 || list.DeadLetters[0].Token != "order-1" {
		t.Errorf("api with the token: %d %s", code, body)
	}
}
