package consumer_test

import (
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/netproxy"
	"github.com/exactlyhq/exactly/internal/pgtest"
)

// Half-open connections: the peer vanished without a FIN or a RST (a
// failover to another host, an expired NAT or firewall entry) and TCP has
// not noticed. Without Config.TransactionTimeout and the fetch's deadline
// each of these stalled its partition until the operating system's TCP
// timers gave up (never, through the proxy).

// pgStallTrap stalls, for good, the Postgres connection of the transaction
// whose handler runs for token, at its next message (the handler's INSERT).
type pgStallTrap struct {
	token  string
	mu     sync.Mutex
	client string
	fired  bool
}

func (s *pgStallTrap) handler(next consumer.HandlerFunc) consumer.HandlerFunc {
	return func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		if m.Token.String() == s.token {
			s.mu.Lock()
			if !s.fired && s.client == "" {
				s.client = tx.Conn().PgConn().Conn().LocalAddr().String()
			}
			s.mu.Unlock()
		}
		return next(ctx, tx, m)
	}
}

type pgStallInspector struct {
	netproxy.PGSplitter
	trap   *pgStallTrap
	client string
}

func (i *pgStallInspector) Inspect([]byte) netproxy.Action {
	s := i.trap
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fired || s.client != i.client {
		return netproxy.Forward
	}
	s.fired = true
	return netproxy.Stall
}

// TestNetPostgresHalfOpen leaves the connection of an open batch transaction
// half-open: the handler's INSERT goes nowhere and no error ever comes. The
// consumer gives up on that attempt after TransactionTimeout and retries the
// batch on another connection; the server ends the abandoned session after
// the same time idle in its transaction, releasing its claims.
func TestNetPostgresHalfOpen(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	const n = 300
	all := msgs("ho", n, 7)
	trap := &pgStallTrap{token: string(all[n/2].Headers[0].Value)}
	proxy := netproxy.Start(t, pgtest.Addr(t))
	proxy.Inspect(func(info netproxy.ConnInfo) netproxy.Inspector {
		return &pgStallInspector{trap: trap, client: info.Client.String()}
	})
	b.cfg.Pool = pgtest.PoolVia(t, proxy.Addr())
	b.cfg.ShutdownTimeout = time.Second
	b.cfg.TransactionTimeout = 3 * time.Second
	kafkatest.Produce(t, b.writer, all...)
	c, err := consumer.New(b.cfg, trap.handler(insertEffect(b.effects)))
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	waitCommitted(t, b, n) // 60s
	checkEffects(t, b, n)
}

// kafkaSplitter frames Kafka requests: a 4-byte size, then the request,
// whose first field is the API key.
type kafkaSplitter struct{}

func (kafkaSplitter) Split(data []byte) int {
	if len(data) < 4 {
		return 0
	}
	n := 4 + int(binary.BigEndian.Uint32(data))
	if len(data) < n {
		return 0
	}
	return n
}

// fetchStaller stalls the connection of the first Fetch request (API key 1)
// sent after the test arms it.
type fetchStaller struct {
	kafkaSplitter
	armed, fired *atomic.Bool
}

func (f fetchStaller) Inspect(msg []byte) netproxy.Action {
	if len(msg) >= 6 && binary.BigEndian.Uint16(msg[4:6]) == 1 && f.armed.Load() && f.fired.CompareAndSwap(false, true) {
		return netproxy.Stall
	}
	return netproxy.Forward
}

// TestNetKafkaFetchHalfOpen leaves the connection of a partition's fetch
// half-open while the group coordinator's connection stays healthy. The
// member keeps heartbeating, so the group never moves the partition; the
// fetch gives up after FetchMaxWait plus a margin and is tried again, on
// another connection. (Its context had no deadline: it waited for good.)
func TestNetKafkaFetchHalfOpen(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	proxy := netproxy.Start(t, kafkatest.Brokers()[0])
	var armed, fired atomic.Bool
	proxy.Inspect(func(netproxy.ConnInfo) netproxy.Inspector { return fetchStaller{armed: &armed, fired: &fired} })
	var asked sync.Map
	b.cfg.Dialer = proxyDialer(proxy, &asked)
	b.cfg.ShutdownTimeout = time.Second
	const n = 200
	all := msgs("hf", 2*n, 7)
	kafkatest.Produce(t, b.writer, all[:n]...)
	c, err := consumer.New(b.cfg, insertEffect(b.effects))
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	waitCommitted(t, b, n)
	armed.Store(true)
	deadline := time.Now().Add(10 * time.Second)
	for !fired.Load() {
		if time.Now().After(deadline) {
			t.Fatal("no fetch was stalled")
		}
		time.Sleep(10 * time.Millisecond)
	}
	kafkatest.Produce(t, b.writer, all[n:]...)
	waitCommitted(t, b, 2*n) // 60s
	checkEffects(t, b, 2*n)
}

// TestNetPostgresHalfOpenRestart: after the batch transaction's connection
// went half-open, the consumer is stopped and another one, reaching Postgres
// directly, takes the partition. It gets the batch again and claims its
// tokens, which the stuck transaction claimed: the Postgres session behind
// the dead connection is "idle in transaction", holding those inbox rows
// locked. The second consumer waits on them (asserted) until the server
// ends that session after the first consumer's TransactionTimeout, set as
// the transaction's idle_in_transaction_session_timeout. (It waited until
// the server's TCP keepalive noticed: 2 hours by default.)
func TestNetPostgresHalfOpenRestart(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	const n = 300
	all := msgs("hr", n, 7)
	trap := &pgStallTrap{token: string(all[n/2].Headers[0].Value)}
	proxy := netproxy.Start(t, pgtest.Addr(t))
	proxy.Inspect(func(info netproxy.ConnInfo) netproxy.Inspector {
		return &pgStallInspector{trap: trap, client: info.Client.String()}
	})
	cfg := b.cfg
	cfg.Pool = pgtest.PoolVia(t, proxy.Addr())
	cfg.ShutdownTimeout = time.Second
	// The server ends the stuck session 8s after its last statement: long
	// enough for the second consumer to be seen waiting on its claims.
	cfg.TransactionTimeout = 8 * time.Second
	kafkatest.Produce(t, b.writer, all...)
	c, err := consumer.New(cfg, trap.handler(insertEffect(b.effects)))
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, c)
	deadline := time.Now().Add(30 * time.Second)
	for {
		trap.mu.Lock()
		fired := trap.fired
		trap.mu.Unlock()
		if fired {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no connection was stalled")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Second)
	stop() // its stuck statement is cancelled and its connection closed, on the client's side
	second, err := consumer.New(b.cfg, insertEffect(b.effects))
	if err != nil {
		t.Fatal(err)
	}
	start(t, second)
	waitBlocked(t, b)
	waitCommitted(t, b, n) // 60s
	checkEffects(t, b, n)
}

// waitBlocked logs the first session of b's database found waiting for
// another, and the session it waits for, within 20s.
func waitBlocked(t *testing.T, b bundle) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var waiter, holder string
		err := b.pool.QueryRow(context.Background(), `
			SELECT w.pid || ' ' || w.state || ': ' || left(w.query, 60), h.pid || ' ' || h.state || ' since ' || h.state_change
			FROM pg_stat_activity w JOIN pg_stat_activity h ON h.pid = (pg_blocking_pids(w.pid))[1]
			WHERE w.datname = current_database() AND w.query LIKE '%'||$1||'%' LIMIT 1`, b.schema).Scan(&waiter, &holder)
		if err == nil {
			t.Logf("session %s waits for session %s", waiter, holder)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Log("no session of the test waits for another")
}
