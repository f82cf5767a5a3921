package consumer_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/netproxy"
	"github.com/exactlyhq/exactly/internal/pgtest"
)

// The network fault tests put an in-process TCP proxy (internal/netproxy)
// between the consumer and Postgres or Kafka, and cut, reset, black-hole and
// slow down its connections while messages flow. The consumer must recover
// by itself and apply every message exactly once. The test's own checks go
// to the services directly.

// holds makes the handler stop at chosen tokens, the first time it sees
// each, until the test releases it: a batch transaction is then open when
// the test injects a fault.
type holds struct {
	mu sync.Mutex
	m  map[string]*hold
}

type hold struct {
	reached, release chan struct{}
	once, done       sync.Once
	calls            atomic.Int32 // handler calls for the token
}

func newHolds(t *testing.T) *holds {
	h := &holds{m: map[string]*hold{}}
	t.Cleanup(func() { // before the consumer's stop, which waits for Run
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, x := range h.m {
			x.Release()
		}
	})
	return h
}

func (h *holds) add(token string) *hold {
	h.mu.Lock()
	defer h.mu.Unlock()
	x := &hold{reached: make(chan struct{}), release: make(chan struct{})}
	h.m[token] = x
	return x
}

// Release lets the held handler go on.
func (x *hold) Release() { x.done.Do(func() { close(x.release) }) }

// Wait waits until the handler holds the token.
func (x *hold) Wait(t *testing.T) {
	t.Helper()
	select {
	case <-x.reached:
	case <-time.After(60 * time.Second):
		t.Fatal("the consumer never reached the held token")
	}
}

func (h *holds) wrap(next consumer.HandlerFunc) consumer.HandlerFunc {
	return func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		h.mu.Lock()
		x := h.m[m.Token.String()]
		h.mu.Unlock()
		if x != nil {
			x.calls.Add(1)
			first := false
			x.once.Do(func() { first = true })
			if first {
				close(x.reached)
				select {
				case <-x.release:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		return next(ctx, tx, m)
	}
}

// countEffects counts the effects, directly in Postgres.
func countEffects(t *testing.T, b bundle) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+b.effects).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNetPostgresPartition runs the consumer's pool through a proxy and, in
// phases of 600 messages, each while a batch transaction is open (a handler
// holds it): cuts the connections and refuses new ones for a second; resets
// them (RST); black-holes them for two seconds (the held transaction's
// statements wait and then go on); cuts them while new connections hang in
// a black hole; and adds latency. After each fault it restores the network
// and waits until every message of the phase is committed to Kafka.
//
// What would break it: a consumer that committed an offset for a batch
// Postgres rolled back (lost effects), one that applied a batch again
// without the inbox after an ambiguous failure (doubled effects), one that
// dead-lettered a message because of an outage, or one that stopped for
// good on a dead connection (waitCommitted times out).
func TestNetPostgresPartition(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	proxy := netproxy.Start(t, pgtest.Addr(t))
	b.cfg.Pool = pgtest.PoolVia(t, proxy.Addr())
	h := newHolds(t)
	const perPhase = 600
	phases := []struct {
		name  string
		fault func(t *testing.T, x *hold)
	}{
		{"cut", func(t *testing.T, x *hold) {
			before := proxy.Accepted()
			if n := proxy.Cut(); n == 0 {
				t.Fatal("Cut closed no connection: the consumer's pool does not go through the proxy")
			}
			x.Release() // its statement meets a closed connection
			noProgress(t, b, time.Second)
			proxy.MustRestore(t)
			waitAccepted(t, proxy, before+1)
		}},
		{"reset", func(t *testing.T, x *hold) {
			before := proxy.Accepted()
			if n := proxy.Reset(); n == 0 {
				t.Fatal("Reset closed no connection")
			}
			x.Release()
			waitAccepted(t, proxy, before+1)
		}},
		{"blackhole", func(t *testing.T, x *hold) {
			proxy.Blackhole()
			x.Release() // its statement waits in the black hole
			noProgress(t, b, 2*time.Second)
			proxy.MustRestore(t)
		}},
		{"cut-hanging", func(t *testing.T, x *hold) {
			proxy.Blackhole()
			if n := proxy.CloseAll(); n == 0 {
				t.Fatal("CloseAll closed no connection")
			}
			x.Release()
			noProgress(t, b, 2*time.Second)
			proxy.MustRestore(t)
		}},
		{"latency", func(t *testing.T, x *hold) {
			proxy.SetLatency(3*time.Millisecond, 7*time.Millisecond)
			x.Release()
		}},
	}
	all := msgs("pg", perPhase*len(phases), 20)
	tokens := func(i int) string { return string(all[i].Headers[0].Value) }
	held := make([]*hold, len(phases))
	for i := range phases {
		held[i] = h.add(tokens(i*perPhase + perPhase/2))
	}
	c, err := consumer.New(b.cfg, h.wrap(insertEffect(b.effects)))
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	for i, ph := range phases {
		begin := time.Now()
		kafkatest.Produce(t, b.writer, all[i*perPhase:(i+1)*perPhase]...)
		held[i].Wait(t)
		ph.fault(t, held[i])
		waitCommitted(t, b, int64((i+1)*perPhase))
		proxy.SetLatency(0, 0)
		t.Logf("phase %s: %v, %d calls of the held token's handler", ph.name, time.Since(begin).Round(time.Millisecond), held[i].calls.Load())
	}
	checkEffects(t, b, len(all))
	if dl := deadLetters(t, b); len(dl) != 0 {
		t.Fatalf("network faults dead-lettered %v", dl)
	}
}

// noProgress lets a fault last for d and fails the test if effects were
// committed meanwhile: all of the consumer's connections must be behind the
// proxy, or the test proves nothing.
func noProgress(t *testing.T, b bundle, d time.Duration) {
	t.Helper()
	time.Sleep(300 * time.Millisecond) // a COMMIT on its way when the fault began may land
	before := countEffects(t, b)
	time.Sleep(d)
	if after := countEffects(t, b); after != before {
		t.Fatalf("%d effects committed while the proxy forwarded nothing", after-before)
	}
}

// waitAccepted waits until the proxy accepted n connections in all: the
// consumer reconnected.
func waitAccepted(t *testing.T, p *netproxy.Proxy, n int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for p.Accepted() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the proxy accepted %d connections, want %d: the consumer did not reconnect", p.Accepted(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// proxyDialer returns a kafka.Dialer whose every connection goes to p,
// whatever address kafka-go asks for (the bootstrap broker, or the broker
// address Kafka advertises in its metadata, 127.0.0.1:9092), and records
// the addresses asked for.
func proxyDialer(p *netproxy.Proxy, asked *sync.Map) *kafka.Dialer {
	return &kafka.Dialer{
		Timeout: 5 * time.Second,
		DialFunc: func(ctx context.Context, network, address string) (net.Conn, error) {
			asked.Store(address, true)
			var d net.Dialer
			return d.DialContext(ctx, network, p.Addr())
		},
	}
}

// TestNetKafkaPartition runs all of the consumer's Kafka connections (group
// coordinator, fetches, offset commits) through a proxy and, in phases of
// 600 messages, each while a batch transaction is open: cuts them for 3s
// (less than the 6s session timeout: the member may keep its partitions);
// resets them; black-holes them for 8s (the broker evicts the member, whose
// heartbeats time out: a rebalance); and adds 50ms of latency each way.
// Postgres is reached directly, so batches commit during the faults while
// their offsets cannot: they are redelivered and must be found in the inbox.
//
// What would break it: an offset committed before its batch's database
// commit or for a batch rolled back when its generation ended (lost
// effects); a redelivered batch applied without the inbox (doubled); a
// group that never rejoins after the network is back (waitCommitted times
// out).
func TestNetKafkaPartition(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	proxy := netproxy.Start(t, kafkatest.Brokers()[0])
	var asked sync.Map
	b.cfg.Dialer = proxyDialer(proxy, &asked)
	h := newHolds(t)
	const perPhase = 600
	phases := []struct {
		name  string
		fault func(t *testing.T, x *hold)
	}{
		{"cut", func(t *testing.T, x *hold) {
			if n := proxy.Cut(); n == 0 {
				t.Fatal("Cut closed no connection: the consumer does not go through the proxy")
			}
			x.Release() // the batch commits to Postgres; its offset cannot be committed
			offsetsStill(t, b, 3*time.Second)
			proxy.MustRestore(t)
		}},
		{"reset", func(t *testing.T, x *hold) {
			if n := proxy.Reset(); n == 0 {
				t.Fatal("Reset closed no connection")
			}
			x.Release()
		}},
		{"blackhole", func(t *testing.T, x *hold) {
			proxy.Blackhole()
			x.Release()
			offsetsStill(t, b, 8*time.Second)
			proxy.MustRestore(t)
		}},
		{"latency", func(t *testing.T, x *hold) {
			proxy.SetLatency(50*time.Millisecond, 50*time.Millisecond)
			x.Release()
		}},
	}
	all := msgs("kafka", perPhase*len(phases), 20)
	held := make([]*hold, len(phases))
	for i := range phases {
		held[i] = h.add(string(all[i*perPhase+perPhase/2].Headers[0].Value))
	}
	c, err := consumer.New(b.cfg, h.wrap(insertEffect(b.effects)))
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	for i, ph := range phases {
		begin := time.Now()
		kafkatest.Produce(t, b.writer, all[i*perPhase:(i+1)*perPhase]...)
		held[i].Wait(t)
		ph.fault(t, held[i])
		waitCommitted(t, b, int64((i+1)*perPhase))
		proxy.SetLatency(0, 0)
		t.Logf("phase %s: %v, %d calls of the held token's handler", ph.name, time.Since(begin).Round(time.Millisecond), held[i].calls.Load())
	}
	checkEffects(t, b, len(all))
	if dl := deadLetters(t, b); len(dl) != 0 {
		t.Fatalf("network faults dead-lettered %v", dl)
	}
	var addrs []string
	asked.Range(func(k, _ any) bool { addrs = append(addrs, k.(string)); return true })
	t.Logf("kafka-go dialed %v, all through the proxy (%d connections)", addrs, proxy.Accepted())
}

// offsetsStill lets a Kafka fault last for d and fails the test if the
// group's committed offsets moved meanwhile: every connection of the
// consumer must be behind the proxy.
func offsetsStill(t *testing.T, b bundle, d time.Duration) {
	t.Helper()
	time.Sleep(300 * time.Millisecond) // an offset commit on its way when the fault began may land
	before := committed(t, b.cfg.GroupID, b.topic)
	time.Sleep(d)
	if after := committed(t, b.cfg.GroupID, b.topic); after != before {
		t.Fatalf("committed offsets moved from %d to %d while the proxy forwarded nothing", before, after)
	}
}

// commitTrap loses the outcome of one COMMIT: the one of the transaction
// whose handler ran for a chosen token. The proxy's inspector of each
// Postgres connection looks for pgx's COMMIT ('Q' "commit") on the
// connection the handler used, and either forwards it and drops Postgres'
// reply (the client cannot know the transaction committed) or drops it
// unsent (it did not commit); either way the connection is closed.
type commitTrap struct {
	token  string
	action netproxy.Action

	mu     sync.Mutex
	client string // the armed connection's client address
	fired  bool
	reply  []byte // what Postgres answered to the trapped COMMIT
	calls  int    // handler calls for token
}

// handler records the connection of token's transaction and applies next.
func (c *commitTrap) handler(next consumer.HandlerFunc) consumer.HandlerFunc {
	return func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		if m.Token.String() == c.token {
			c.mu.Lock()
			c.calls++
			if !c.fired {
				c.client = tx.Conn().PgConn().Conn().LocalAddr().String()
			}
			c.mu.Unlock()
		}
		return next(ctx, tx, m)
	}
}

func (c *commitTrap) inspector(info netproxy.ConnInfo) netproxy.Inspector {
	return &commitInspector{trap: c, client: info.Client.String()}
}

type commitInspector struct {
	netproxy.PGSplitter
	trap   *commitTrap
	client string
}

func (i *commitInspector) Inspect(msg []byte) netproxy.Action {
	q, ok := netproxy.PGQuery(msg)
	if !ok || !strings.EqualFold(q, "commit") {
		return netproxy.Forward
	}
	c := i.trap
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fired || c.client != i.client {
		return netproxy.Forward
	}
	c.fired = true
	return c.action
}

func (i *commitInspector) DroppedReply(reply []byte) {
	i.trap.mu.Lock()
	defer i.trap.mu.Unlock()
	i.trap.reply = append(i.trap.reply, reply...)
}

// TestCommitOutcomeUnknown loses the outcome of a batch transaction's COMMIT
// in the network. "reply-lost": the COMMIT reaches Postgres, which commits,
// and the connection dies before its reply reaches the consumer; the retried
// batch must find every token claimed and run no handler again.
// "commit-lost": the connection dies with the COMMIT unsent, so Postgres
// rolls back; the retried batch must apply the messages.
//
// What would break it: a consumer that counted a failed COMMIT as committed
// and moved its offset on (commit-lost loses the batch); one that retried
// without the inbox, or with a claim that missed the committed tokens
// (reply-lost doubles the batch); one that gave up (waitCommitted times
// out).
func TestCommitOutcomeUnknown(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		action netproxy.Action
		calls  int // handler calls for the trapped token
	}{
		{"reply-lost", netproxy.DropReply, 1}, // committed: the retry finds it
		{"commit-lost", netproxy.Drop, 2},     // rolled back: the retry runs it
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, 1)
			const n = 300
			all := msgs("co", n, 7)
			trap := &commitTrap{token: string(all[n/2].Headers[0].Value), action: tc.action}
			proxy := netproxy.Start(t, pgtest.Addr(t))
			proxy.Inspect(trap.inspector) // before the pool connects
			b.cfg.Pool = pgtest.PoolVia(t, proxy.Addr())
			kafkatest.Produce(t, b.writer, all...)
			c, err := consumer.New(b.cfg, trap.handler(insertEffect(b.effects)))
			if err != nil {
				t.Fatal(err)
			}
			start(t, c)
			waitCommitted(t, b, n)
			checkEffects(t, b, n)
			if dl := deadLetters(t, b); len(dl) != 0 {
				t.Fatalf("dead letters %v", dl)
			}
			trap.mu.Lock()
			defer trap.mu.Unlock()
			if !trap.fired {
				t.Fatal("the trap never fired: no COMMIT was lost")
			}
			tags := netproxy.PGCommandTags(trap.reply)
			switch tc.action {
			case netproxy.DropReply:
				if len(tags) == 0 || tags[0] != "COMMIT" {
					t.Fatalf("Postgres answered %q to the trapped COMMIT, want COMMIT: the test did not lose a committed outcome", tags)
				}
			case netproxy.Drop:
				if len(trap.reply) != 0 {
					t.Fatalf("Postgres answered %q to a COMMIT the proxy dropped", tags)
				}
			}
			if trap.calls != tc.calls {
				t.Fatalf("the handler ran %d times for %s, want %d", trap.calls, trap.token, tc.calls)
			}
			t.Logf("trapped COMMIT: reply %q; handler calls for %s: %d", tags, trap.token, trap.calls)
		})
	}
}
