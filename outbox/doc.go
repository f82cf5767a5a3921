// Package outbox publishes messages to Kafka if and only if the transaction
// that enqueued them commits.
//
// [Outbox.EnqueueTx] writes messages into the outbox table through the
// caller's transaction, in one round trip. Each message gets a stable
// message id, a UUIDv7, that the relay sends in the [exactly.Header]
// header: the header a downstream consumer's inbox reads by default. A
// [Relay] reads committed rows and publishes them, then removes them.
//
// # Order of operations
//
//  1. The application's transaction writes its data and enqueues messages.
//     Commit makes both visible; rollback discards both.
//  2. The relay reads the rows of a shard in id order, but only rows whose
//     transaction is older than every transaction still running
//     (xid < pg_snapshot_xmin). Rows are removed only once published, so a
//     row that commits late is read later: none is skipped.
//  3. It publishes them with acknowledgement from all in-sync replicas.
//  4. It deletes them (or marks them published, with
//     RelayConfig.KeepPublished).
//
// A crash between 3 and 4 publishes the rows again with the same message
// ids; the downstream inbox skips them. Publishing is at least once;
// processing downstream is exactly once.
//
// # Order
//
// Messages of one transaction are published in the order they were
// enqueued. A message enqueued after another message's transaction
// committed is published after it: its transaction began writing later, so
// it becomes readable no sooner. Two transactions that run at the same time
// have no defined order; if messages of one key come from concurrent
// transactions and their order matters, make those transactions take a
// common row lock (SELECT … FOR UPDATE of the entity) as their first write,
// which orders them. Keys map to shards and each shard has one relay, so
// this order is the order in the Kafka partition.
//
// Order also holds when Kafka refuses part of a write. Kafka accepts or
// refuses a record batch whole, so each write of a shard is sized to go out
// as one record batch per partition (at most the writer's BatchSize and
// BatchBytes), ends before a key's row for another topic than the key's
// earlier rows in it, and has its writer to itself. A refused row blocks
// its key; rows of the key behind it wait.
//
// A long-running writing transaction anywhere in the cluster holds
// pg_snapshot_xmin back: rows committed after it started wait until it
// ends (the relay then polls every 10×LingerPoll rather than sleeping).
// Keep writing transactions short; read-only transactions do not hold it.
//
// # Shards and relays
//
// Rows are sharded by a hash of the message key (Config.Shards). A relay
// owns a shard while it holds a session advisory lock on a dedicated
// connection; rows of one key are in one shard, so per-key order holds with
// any number of relays. Every relay tries every shard after a random delay,
// so relays started together share the shards roughly evenly (a relay may
// own none and stand by). When a relay dies its session ends, the lock is
// released, and another relay takes the shard within
// RelayConfig.LockInterval. Change Config.Shards only when the outbox is
// empty: rows already enqueued keep their old shard. A relay reads only
// its shards 0 to Shards-1: rows a writer with more shards put above them
// wait for a relay configured like that writer. A relay logs an error when
// it finds such rows at start-up (and starts all the same), exports their
// number as MetricRowsOutsideShards, and Shards lists their shards.
//
// # Size
//
// EnqueueTx refuses a message whose key, value and headers exceed
// Config.MaxMessageBytes (1 MiB by default, Kafka's default largest
// message) with ErrMessageTooLarge, and a topic name or header key Kafka
// or Postgres cannot take with ErrInvalidMessage. A relay reads per round
// at most what one write of its writer holds (the writer's BatchBytes, or
// one larger row), so its memory is bounded by bytes whatever the rows'
// size.
//
// # Wake-ups
//
// A relay LISTENs on the table's channel and polls every PollInterval as a
// fallback, since notifications are lost while its connection is down. A
// NOTIFY takes a cluster-wide lock at commit, so EnqueueTx sends at most one
// per Config.NotifyWindow per process; after each wake-up the relay keeps
// polling for RelayConfig.Linger to catch rows enqueued without one.
//
// # Failures
//
// If Kafka is unreachable, rows stay and publishing is retried with backoff,
// forever. A row that fails for a reason retrying cannot fix (too large, an
// unknown topic) blocks only its own key: it is retried alone with backoff
// and after RelayConfig.MaxRejections such rejections moved to the dead-letter
// table with its reason; later rows of that key follow. Rows that merely
// shared a rejected write are published again alone at once. Each row keeps
// its failed attempts (outages included), its rejections and its last error.
//
// # Table maintenance
//
// The outbox is a queue table: every row is inserted and soon deleted. The
// migration sets aggressive autovacuum thresholds on it (scale factor 0.01)
// so dead rows do not slow the relay's index scans; keep them unless you
// tune vacuum for the whole database.
package outbox
