// Package consumer runs a Kafka consumer group whose handlers apply each
// message's database effects exactly once.
//
// A handler receives the transaction that claimed the message's token in
// the inbox; everything it writes through that pgx.Tx commits together with
// the token. Offsets are committed to Kafka only after that transaction
// committed. So a message is applied at least once (nothing is acknowledged
// before it is committed) and at most once per token (a redelivery finds the
// token and is skipped).
//
// # Flow
//
// For each assigned partition (partitions run in parallel, each in order):
//
//  1. Fetch a batch: up to Config.BatchSize messages, waiting at most
//     Config.BatchWait once the first arrived. Reads are committed only
//     (Config.ReadUncommitted): records of aborted transactions are dropped,
//     and transaction markers never reach a handler, the inbox or the
//     dead-letter table; offsets move past both.
//  2. Check each message: size, token ([TokenSource]). A message that
//     fails is dead-lettered with its reason, never handled.
//  3. Begin; claim every token in one statement; run the handler for each
//     fresh message (or the [BatchHandler] once); dead-letter conflicts;
//     commit.
//  4. Hand the offset after the batch's last message to the generation's
//     committer, which commits the latest offset of every partition to
//     Kafka in the background; never an offset whose batch Postgres has not
//     committed.
//
// If a handler fails, the batch transaction is rolled back and the batch is
// run again with a savepoint per message, so the failing message neither
// discards nor double-applies the others. The messages before it commit; it
// is retried with exponential backoff; after Config.MaxAttempts failures (or
// at once for [Permanent] errors and [ErrUndecodable]) it is written to the
// dead-letter table in the same transaction that lets the offset pass it.
// Panics in handlers are recovered and count as failures.
//
// Database errors outside handlers, and handler errors that are transient
// database conditions (serialization failure, deadlock, lost connection),
// retry the whole batch with backoff, forever: an outage is waited out,
// never skipped and never dead-lettered.
//
// # Concurrency across keys
//
// Config.KeyConcurrency, above 1, runs a partition's messages in lanes: up
// to that many transactions at once, each over a batch whose keys no other
// lane holds, so messages of one key never run at once nor out of order
// (messages without a key keep their order among themselves). What is
// committed to Kafka is the watermark, the offset of the first message not
// settled: after a crash or a rebalance, messages beyond it that committed
// are redelivered, and the inbox skips them, so nothing else needs to be
// remembered. A message whose handler fails holds only its key: the key
// waits out its backoff while other keys flow, and the watermark waits
// before the message until it succeeds or is dead-lettered. At most
// Config.MaxPending messages wait beyond the watermark; then fetching
// pauses, so a stuck key stalls its partition instead of growing memory.
// The number of lanes adapts between 1 and KeyConcurrency to what adds
// throughput: many for handlers that wait (a slow call), about one for fast
// ones. Leave it off when handlers need order across keys of a partition.
//
// # Tokens
//
// A [TokenSource] finds the token of each message (Config.Token):
// [FromHeader] (the default, reading [exactly.Header], "Idempotency-Key",
// which the outbox relay sets), [FromCloudEvents], [FromKey],
// [FromContentHash], [FromOffset] (redelivery protection only), [FromFunc],
// and [FirstOf] to combine them. A message without a token yields an error
// wrapping [inbox.ErrNoToken], never a panic; one whose token is unusable
// (longer than [inbox.MaxTokenLen], or its header repeated) an error wrapping
// [inbox.ErrInvalidToken]. Either is dead-lettered, never handled without
// protection. The sources live here, beside the Kafka client; package inbox
// knows tokens, not Kafka.
//
// # Failure windows
//
//   - Crash before the database commit: nothing was committed; the batch is
//     redelivered and processed.
//   - Crash after the database commit, before the offset commit: the batch is
//     redelivered; every token is found; nothing runs twice.
//   - Lost COMMIT reply: the batch is retried; committed tokens come back as
//     duplicates.
//   - Rebalance: fetching stops; an in-flight transaction is rolled back
//     when the generation ends; offsets are committed only for what
//     Postgres committed. A new owner that claims a token still held by the
//     old owner's open transaction waits for it, then skips it.
//   - Shutdown (Run's context ends): fetching stops, in-flight batches get
//     Config.ShutdownTimeout to commit, their offsets are committed, and the
//     member leaves the group.
//   - Offset commit fails: the offset is kept and retried with backoff until
//     it succeeds, a later one replaces it, or the generation ends.
//   - Handler kills the process (crash, OOM, os.Exit): at the next
//     assignment the consumer finds the start of the batch it died in still
//     recorded, runs that batch one message at a time, recording each
//     attempt before it runs, and dead-letters a message whose attempts
//     reach Config.MaxAttempts as [ReasonProcessDied].
//   - Kafka deleted messages before they were processed (retention): the
//     partition resumes at its log start; the range is logged at warn and
//     counted in [MetricSkipped].
//
// # What exactly once covers
//
// Effects written through the handler's transaction. A handler that calls an
// HTTP API or sends an e-mail may do so again when its transaction rolls
// back or the batch is retried; put such effects in the outbox instead.
//
// # At least once
//
// Config.AtLeastOnce switches the inbox off: no token is read or claimed and
// every delivery is handled, redeliveries included. Everything else above
// holds. Use it for handlers that are idempotent by themselves, such as an
// upsert keyed by the message; the benchmark uses it to measure what the
// inbox costs.
//
// # The first delivery's result
//
// The HTTP middleware answers a repeated request with the stored response; a
// Kafka handler answers with a message. A handler stores its result with
// [Message.SetResult] in its transaction; a later delivery of the same token
// (a redelivery, a producer's retry) calls Config.OnDuplicate with that
// result, in the batch's transaction, so a request/reply handler can enqueue
// the same reply again through the outbox. Without OnDuplicate, duplicates
// are skipped as cheaply as ever.
//
// # Dead letters
//
// The dead-letter table keeps the whole message (key, value, headers,
// coordinates; header keys that are not text kept as bytes), the reason ([ReasonNoToken], [ReasonTokenConflict], …), the
// last error and the attempt count. A dead-lettered message's token is not
// claimed, so a replay of it is processed. With a partitioned inbox
// (inbox.LayoutPartitioned), a message whose UUIDv7 token is older than the
// inbox keeps is dead-lettered as [ReasonTokenExpired]: its record may have
// been dropped after it was applied, so it is not applied again.
//
// # Maintenance
//
// Beside the group, Run maintains the consumer's tables every
// Config.MaintenanceInterval: for a partitioned inbox it creates the
// partitions of the coming periods; with Config.InboxRetention it retires
// tokens older than that (dropping whole partitions in a partitioned inbox,
// pruning the rest row by row), and with Config.DeadLetterRetention it
// deletes the scope's dead letters resolved longer ago. Every member may do
// it; the inbox's partition maintenance runs in one process at a time under
// an advisory lock. Without these options, run `exactly prune` on a schedule.
package consumer
