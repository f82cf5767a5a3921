package outbox_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/netproxy"
	"github.com/exactlyhq/exactly/internal/pgtest"
	"github.com/exactlyhq/exactly/outbox"
)

// The network fault tests put an in-process TCP proxy (internal/netproxy)
// between the relay and Postgres or Kafka. What the design promises
// (docs/design.md, Outbox): every committed row is published at least once,
// in per-key order, under its stable message id; a row may be published
// again when the relay cannot know its delete committed, and the downstream
// inbox skips the copy. The tests check the topic and a downstream consumer
// (which, like the tests' own checks, reaches the services directly).

// orderedMessages returns n messages for topic over 7 keys, each key's
// values increasing (what checkOnce checks downstream).
func orderedMessages(topic string, from, n int) []outbox.Message {
	out := make([]outbox.Message, n)
	for i := range out {
		out[i] = outbox.Message{Topic: topic, Key: []byte("k" + strconv.Itoa((from+i)%7)), Value: []byte(strconv.Itoa(from + i))}
	}
	return out
}

// readTopic reads every message of b's topic (partitions of them) and
// returns how often each message id was published. It fails the test when
// an id in ids is missing or an id not in ids was published.
func readTopic(t *testing.T, b bundle, partitions int, ids []string) (total int, copies map[string]int) {
	t.Helper()
	var end int64
	for p := range partitions {
		end += kafkatest.EndOffset(t, b.topic, p)
	}
	copies = map[string]int{}
	for _, m := range kafkatest.ReadAll(t, b.topic, partitions, int(end), 30*time.Second) {
		copies[kafkatest.Header(m, exactly.Header)]++
	}
	for _, id := range ids {
		if copies[id] == 0 {
			t.Fatalf("message %s was never published (%d messages in the topic)", id, end)
		}
	}
	if len(copies) != len(ids) {
		t.Fatalf("%d distinct message ids in the topic for %d messages: a republish changed an id", len(copies), len(ids))
	}
	return int(end), copies
}

// deleteTrap loses the outcome of one of the relay's deletes of published
// rows. The delete runs outside a transaction block, through the extended
// protocol: Parse (once per connection, pgx caches the statement), then
// Bind, Execute and Sync, whose processing commits the implicit transaction.
// The proxy's inspector of each connection finds the statement that
// deletes from the outbox in its Parse message, and at the first Sync after
// a Bind of it either forwards the Sync and drops Postgres' reply (the rows
// are deleted; the relay cannot know) or drops the Sync unsent (Postgres
// rolls the delete back when the connection closes).
type deleteTrap struct {
	table  string // the outbox table, as it appears in the SQL
	action netproxy.Action

	mu    sync.Mutex
	fired bool
	reply []byte
}

func (d *deleteTrap) inspector(netproxy.ConnInfo) netproxy.Inspector {
	return &deleteInspector{trap: d, deletes: map[string]bool{}}
}

type deleteInspector struct {
	netproxy.PGSplitter
	trap    *deleteTrap
	deletes map[string]bool // prepared statements that delete from the outbox
	armed   bool            // such a statement is bound since the last Sync
}

func (i *deleteInspector) Inspect(msg []byte) netproxy.Action {
	if name, q, ok := netproxy.PGParse(msg); ok {
		i.deletes[name] = strings.HasPrefix(q, "DELETE FROM "+i.trap.table)
	}
	if _, stmt, ok := netproxy.PGBind(msg); ok && i.deletes[stmt] {
		i.armed = true
	}
	if !netproxy.PGSync(msg) || !i.armed {
		return netproxy.Forward
	}
	i.armed = false
	d := i.trap
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fired {
		return netproxy.Forward
	}
	d.fired = true
	return d.action
}

func (i *deleteInspector) DroppedReply(reply []byte) {
	i.trap.mu.Lock()
	defer i.trap.mu.Unlock()
	i.trap.reply = append(i.trap.reply, reply...)
}

// TestCommitOutcomeRelayDelete loses the outcome of the relay's delete of
// rows Kafka acknowledged. "reply-lost": Postgres deletes them and the
// connection dies before the relay hears so; the relay gives the shard up
// and takes it again, and the rows are gone: published once. "delete-lost":
// the connection dies before the delete commits; Postgres rolls it back, so
// the rows are published again under the same ids, which is what the design
// allows, and the downstream inbox applies each once.
//
// What would break it: a relay that counted the failed delete as done and
// skipped the rows, or one that deleted rows it had not published (a row
// missing from the topic); a republish under a new id (more distinct ids
// than messages); a consumer that applied a republished copy (checkOnce); a
// relay that never took the shard back (waitEmpty times out).
func TestCommitOutcomeRelayDelete(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		action netproxy.Action
	}{
		{"reply-lost", netproxy.DropReply},
		{"delete-lost", netproxy.Drop},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, 2)
			const n = 300
			ids := enqueue(t, b, orderedMessages(b.topic, 0, n)...)
			trap := &deleteTrap{table: pgx.Identifier{b.schema, "outbox"}.Sanitize(), action: tc.action}
			proxy := netproxy.Start(t, pgtest.Addr(t))
			proxy.Inspect(trap.inspector) // before the pool connects
			startRelay(t, pgtest.PoolVia(t, proxy.Addr()), b.relay)
			waitEmpty(t, b)

			trap.mu.Lock()
			fired, tags := trap.fired, netproxy.PGCommandTags(trap.reply)
			trap.mu.Unlock()
			if !fired {
				t.Fatal("the trap never fired: no delete's outcome was lost")
			}
			total, copies := readTopic(t, b, 2, ids)
			republished := total - n
			switch tc.action {
			case netproxy.DropReply:
				if len(tags) == 0 || !strings.HasPrefix(tags[0], "DELETE ") || tags[0] == "DELETE 0" {
					t.Fatalf("Postgres answered %q to the trapped delete, want DELETE of some rows: the test did not lose a committed delete", tags)
				}
			case netproxy.Drop:
				if len(trap.reply) != 0 {
					t.Fatalf("Postgres answered %q to a delete whose Sync the proxy dropped", tags)
				}
				if republished == 0 {
					t.Fatal("no row was published again: the dropped delete's rows were not left in the outbox, or were lost")
				}
			}
			t.Logf("trapped delete: reply %q; %d messages in the topic for %d rows (%d published again, %d distinct ids)", tags, total, n, republished, len(copies))
			effects := downstream(t, b)
			waitCount(t, b.pool, 60*time.Second, n, "SELECT count(DISTINCT token) FROM "+effects)
			checkOnce(t, b.pool, effects, n)
			if dl := countRows(t, b, "outbox_dead_letters"); dl != 0 {
				t.Fatalf("%d rows dead-lettered", dl)
			}
		})
	}
}

// relayPhases enqueues perPhase rows per phase in one transaction, waits
// until the relay has published some of them, injects the phase's fault
// while the rest wait (nothing is enqueued while a fault lasts), and waits
// until the outbox is empty. It returns the ids of all rows.
func relayPhases(t *testing.T, b bundle, perPhase int, phases []relayPhase) []string {
	t.Helper()
	var ids []string
	for i, ph := range phases {
		begin := time.Now()
		ids = append(ids, enqueue(t, b, orderedMessages(b.topic, i*perPhase, perPhase)...)...)
		deadline := time.Now().Add(30 * time.Second)
		for countRows(t, b, "outbox") == perPhase {
			if time.Now().After(deadline) {
				t.Fatalf("phase %s: the relay published nothing in 30s", ph.name)
			}
			time.Sleep(time.Millisecond)
		}
		ph.fault(t)
		waitEmpty(t, b)
		t.Logf("phase %s: %v", ph.name, time.Since(begin).Round(time.Millisecond))
	}
	return ids
}

type relayPhase struct {
	name  string
	fault func(t *testing.T)
}

// noDeletes lets a fault last for d and fails the test if rows left the
// outbox meanwhile: the relay's Postgres connections must all be behind the
// proxy, or the test proves nothing. It reports the rows waiting.
func noDeletes(t *testing.T, b bundle, d time.Duration) int {
	t.Helper()
	time.Sleep(300 * time.Millisecond) // a delete on its way when the fault began may land
	before := countRows(t, b, "outbox")
	time.Sleep(d)
	if after := countRows(t, b, "outbox"); after != before {
		t.Fatalf("%d rows deleted while the proxy forwarded nothing", before-after)
	}
	return before
}

// TestNetRelayPostgresPartition runs the relay's Postgres connections (its
// pool: the shard-owning sessions and their advisory locks, and LISTEN)
// through a proxy, with 10ms of latency so that each phase's 2000 rows take
// a while, and while it publishes them: cuts the connections and refuses new
// ones; resets them; black-holes them; cuts them while new connections hang;
// and adds more latency. Each fault can come between a publish and its
// delete, so rows may be published again; none may be lost or applied twice
// downstream.
//
// What would break it: rows deleted without being published or skipped after
// a lost shard (missing from the topic); a shard never taken back after its
// session died (waitEmpty times out); per-key order broken downstream.
func TestNetRelayPostgresPartition(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	proxy := netproxy.Start(t, pgtest.Addr(t))
	proxy.SetLatency(5*time.Millisecond, 5*time.Millisecond)
	cfg := b.relay
	cfg.BatchSize = 20
	startRelay(t, pgtest.PoolVia(t, proxy.Addr()), cfg)
	ids := relayPhases(t, b, 2000, []relayPhase{
		{"cut", func(t *testing.T) {
			if n := proxy.Cut(); n == 0 {
				t.Fatal("Cut closed no connection: the relay's pool does not go through the proxy")
			}
			t.Logf("cut with %d rows waiting", noDeletes(t, b, time.Second))
			proxy.MustRestore(t)
		}},
		{"reset", func(t *testing.T) {
			if n := proxy.Reset(); n == 0 {
				t.Fatal("Reset closed no connection")
			}
		}},
		{"blackhole", func(t *testing.T) {
			proxy.Blackhole()
			t.Logf("black hole with %d rows waiting", noDeletes(t, b, 2*time.Second))
			proxy.MustRestore(t)
		}},
		{"cut-hanging", func(t *testing.T) {
			proxy.Blackhole()
			if n := proxy.CloseAll(); n == 0 {
				t.Fatal("CloseAll closed no connection")
			}
			t.Logf("cut with %d rows waiting", noDeletes(t, b, 2*time.Second))
			proxy.MustRestore(t)
		}},
		{"latency", func(t *testing.T) {
			proxy.SetLatency(10*time.Millisecond, 20*time.Millisecond)
		}},
	})
	total, _ := readTopic(t, b, 2, ids)
	t.Logf("%d messages in the topic for %d rows", total, len(ids))
	effects := downstream(t, b)
	waitCount(t, b.pool, 60*time.Second, len(ids), "SELECT count(DISTINCT token) FROM "+effects)
	checkOnce(t, b.pool, effects, len(ids))
	if dl := countRows(t, b, "outbox_dead_letters"); dl != 0 {
		t.Fatalf("%d rows dead-lettered by a network fault", dl)
	}
}

// TestNetRelayKafkaPartition runs the relay's Kafka connections through a
// proxy (RelayConfig.Transport dials the proxy whatever broker address
// kafka-go asks for), with 5ms of latency so that each phase's 2000 rows
// take a while, and while it publishes them: cuts the connections and
// refuses new ones; resets them; black-holes them for 12s, longer than the
// writer's 10s timeouts (a produce request may reach Kafka after the relay
// gave up on it and published its rows again); and adds 50ms of latency.
//
// What would break it: a row deleted although Kafka did not acknowledge it
// (missing from the topic); a row counted as rejected and dead-lettered
// because of an outage; a late copy applied downstream, or applied out of
// per-key order.
func TestNetRelayKafkaPartition(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	proxy := netproxy.Start(t, kafkatest.Brokers()[0])
	proxy.SetLatency(5*time.Millisecond, 5*time.Millisecond)
	transport := &kafka.Transport{Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, proxy.Addr())
	}}
	t.Cleanup(transport.CloseIdleConnections) // after the relay stopped
	cfg := b.relay
	cfg.BatchSize = 20
	cfg.Transport = transport
	startRelay(t, b.pool, cfg)
	// Only the relay reaches Kafka through the proxy: while it forwards
	// nothing, nothing is published, so no row is deleted.
	ids := relayPhases(t, b, 2000, []relayPhase{
		{"cut", func(t *testing.T) {
			if n := proxy.Cut(); n == 0 {
				t.Fatal("Cut closed no connection: the relay does not go through the proxy")
			}
			t.Logf("cut with %d rows waiting", noDeletes(t, b, time.Second))
			proxy.MustRestore(t)
		}},
		{"reset", func(t *testing.T) {
			if n := proxy.Reset(); n == 0 {
				t.Fatal("Reset closed no connection")
			}
		}},
		{"blackhole", func(t *testing.T) {
			proxy.Blackhole()
			t.Logf("black hole with %d rows waiting", noDeletes(t, b, 12*time.Second))
			proxy.MustRestore(t)
		}},
		{"latency", func(t *testing.T) {
			proxy.SetLatency(50*time.Millisecond, 50*time.Millisecond)
		}},
	})
	total, _ := readTopic(t, b, 2, ids)
	t.Logf("%d messages in the topic for %d rows", total, len(ids))
	effects := downstream(t, b)
	waitCount(t, b.pool, 60*time.Second, len(ids), "SELECT count(DISTINCT token) FROM "+effects)
	checkOnce(t, b.pool, effects, len(ids))
	if dl := countRows(t, b, "outbox_dead_letters"); dl != 0 {
		t.Fatalf("%d rows dead-lettered by a network fault", dl)
	}
}
