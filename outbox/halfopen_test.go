package outbox_test

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/exactlyhq/exactly/internal/netproxy"
	"github.com/exactlyhq/exactly/internal/pgtest"
)

// Half-open connections: the peer vanished without a FIN or a RST (a
// failover, an expired NAT or firewall entry) and TCP has not noticed.

// deleteStaller stalls, for good, the first connection that binds the
// relay's delete of published rows: the relay waits between publish and
// delete, on a session that still holds the shard's advisory lock.
type deleteStaller struct {
	netproxy.PGSplitter
	table   string
	fired   *atomic.Bool
	deletes map[string]bool
}

func (d *deleteStaller) Inspect(msg []byte) netproxy.Action {
	if name, q, ok := netproxy.PGParse(msg); ok {
		d.deletes[name] = strings.HasPrefix(q, "DELETE FROM "+d.table)
	}
	if _, stmt, ok := netproxy.PGBind(msg); ok && d.deletes[stmt] && d.fired.CompareAndSwap(false, true) {
		return netproxy.Stall
	}
	return netproxy.Forward
}

// TestNetRelayHalfOpen leaves a shard-owning connection of a relay half-open
// between a publish and its delete, and starts a second relay that reaches
// Postgres directly. The stuck relay gives up on its round after
// RoundTimeout, and the server ends the session behind the dead connection
// (idle_session_timeout), releasing the shard's advisory lock, so one of the
// relays takes the shard over and every row is published. (Nothing bounded
// a round, and the session kept the lock until the OS's TCP timers ended
// the connection: minutes on the relay's side, tcp_keepalives_idle, 2
// hours by default, on the server's.)
func TestNetRelayHalfOpen(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	var fired atomic.Bool
	table := pgx.Identifier{b.schema, "outbox"}.Sanitize()
	proxy := netproxy.Start(t, pgtest.Addr(t))
	proxy.Inspect(func(netproxy.ConnInfo) netproxy.Inspector {
		return &deleteStaller{table: table, fired: &fired, deletes: map[string]bool{}}
	})
	cfg := b.relay
	cfg.ShutdownTimeout = time.Second
	cfg.RoundTimeout = 2 * time.Second
	startRelay(t, pgtest.PoolVia(t, proxy.Addr()), cfg)
	ids := enqueue(t, b, orderedMessages(b.topic, 0, 300)...)
	deadline := time.Now().Add(30 * time.Second)
	for !fired.Load() {
		if time.Now().After(deadline) {
			t.Fatal("no delete was stalled")
		}
		time.Sleep(10 * time.Millisecond)
	}
	startRelay(t, b.pool, cfg) // a healthy relay, ready to take over
	ids = append(ids, enqueue(t, b, orderedMessages(b.topic, 300, 300)...)...)
	waitEmpty(t, b) // 60s
	readTopic(t, b, 2, ids)
}
