// Package inbox records which messages were processed, in the same Postgres
// transaction as their effects, so that a message delivered again is
// recognised and skipped.
//
// # The guarantee
//
// A [Store] claims idempotency tokens inside the caller's pgx.Tx. The claim
// is an INSERT … ON CONFLICT DO NOTHING on the primary key (scope, token):
//
//   - [Fresh]: the token is new. The caller applies the message's effects in
//     the same transaction; the token and the effects commit together or not
//     at all.
//   - [Duplicate]: the token was committed before. Skip the message;
//     [Claimed].Stored holds the result saved with [Store.SetResult].
//   - [Conflict]: the token was committed with another payload fingerprint.
//     The producer reused a token for different content; do not apply, do
//     not silently skip.
//
// Two transactions claiming one token at once cannot both win: the second
// waits on the primary key until the first ends, then sees Duplicate (the
// first committed) or claims the token itself (the first rolled back).
//
// # Failure windows
//
//  1. Crash before COMMIT: token and effects roll back together; the message
//     is redelivered and claimed fresh.
//  2. Crash after COMMIT, before the Kafka offset commit: the message is
//     redelivered; the claim finds the token; the effects are not applied
//     again.
//  3. COMMIT outcome unknown (connection lost during COMMIT): retry the
//     whole transaction; if it had committed, the retry finds the token.
//
// # Tokens
//
// [ParseToken] normalises a token: a UUID in canonical form is stored as 16
// bytes (so time-ordered UUIDv7 tokens append to the right edge of the
// index), anything else as its bytes; an empty token is an error wrapping
// [ErrNoToken], one longer than [MaxTokenLen] an error wrapping
// [ErrInvalidToken]. [UUIDToken] and [DigestToken] build tokens from bytes.
//
// The inbox knows tokens, not transports: the Kafka token sources
// (consumer.FromHeader and its siblings) live in package consumer, and
// package idempotency reads tokens from HTTP requests. Neither this package
// nor idempotency imports a Kafka client.
//
// # Batches
//
// [Store.ClaimBatch] claims a whole batch in one round trip (arrays and
// unnest). Measured on a 2-core machine, batches of 1000 claim 55× more
// tokens per second than one transaction per token (make bench-inbox,
// docs/benchmarks.md).
//
// # Retention
//
// A token must outlive every way its message can come back: Kafka's
// retention of the topic (a consumer group reset to the earliest offset
// replays it), the 7-day expiry of an idle group's committed offsets (after
// which the group restarts from its StartOffset), dead-letter replays and
// producer retries. Keep tokens longer than the longest of these; 30 days is
// a safe default for topics with 7-day retention.
//
// How tokens retire depends on the table's [Layout], chosen at migration:
//
//   - [LayoutSingle] (the default): [Store.Prune] deletes tokens claimed
//     before a cut-off in transactions of Config.PruneBatchSize rows, oldest
//     first, through a (scope, processed_at) index. Safe while consumers
//     run, but retiring a day of tokens writes as much WAL and leaves as
//     much for vacuum as claiming them did.
//   - [LayoutPartitioned]: the table is range-partitioned on the token. A
//     UUIDv7 (what the outbox gives every message, and what clients should
//     send as Idempotency-Key) begins with its millisecond timestamp, so its
//     stored bytes order it by time and a partition holds one
//     Config.PartitionPeriod of tokens. The primary key (scope, token)
//     contains the partition key, so a token is rejected wherever it was
//     claimed first: uniqueness stays global. [Store.CreatePartitions]
//     creates partitions ahead of time; [Store.DropPartitions] detaches and
//     drops those whose period ended before the cut-off, one DROP per period
//     whatever it holds. Tokens without a time (text, digests, UUIDs of
//     other versions) live in one more partition that [Store.Prune] retires
//     row by row, like the single layout.
//
// In the partitioned layout a UUIDv7 token is kept until its own time plus
// the retention, not its claim: a token minted long before it is first
// claimed (a producer's clock far behind, a dead letter replayed late) is
// kept for less after its claim. What keeps that safe is the floor. When
// DropPartitions drops partitions, it raises, in the same transaction and
// under the table's lock, a floor to their upper bound; a UUIDv7 token below
// the floor that is not in the inbox is never claimed fresh but reported
// [Expired]: its record may have been dropped, so the message may have been
// applied already. The consumer dead-letters such messages. A duplicate is
// never applied twice, whatever the clocks say.
//
// Claims never fail for lack of a partition: a UUIDv7 token whose period
// has no partition (minted far ahead of the clock, or while no process ran
// CreatePartitions) goes to a default partition that Prune retires by claim
// time, and CreatePartitions later moves such tokens into the partition it
// creates for them (up to [PartitionMoveLimit]; a period with more stays in
// the default partition). Partition maintenance takes a transaction-scoped
// advisory lock, so any number of processes may run it; its DDL waits at
// most [MaintenanceLockTimeout] for the claims in flight.
//
// # Tables
//
// [Migrate] (or [Migrations] with package migrate) creates the table named
// by [Config]; schema and table names are quoted with pgx.Identifier.
package inbox
