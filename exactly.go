// Package exactly holds the vocabulary that the packages below it share: the
// Header that carries idempotency tokens and DB, the database handle they
// all take.
// The work is done by [github.com/exactlyhq/exactly/consumer],
// [github.com/exactlyhq/exactly/outbox],
// [github.com/exactlyhq/exactly/idempotency],
// [github.com/exactlyhq/exactly/inbox] and
// [github.com/exactlyhq/exactly/migrate]; this package stays small so that
// importing it costs nothing.
package exactly

// Header is the header that carries a message's idempotency token, over HTTP
// and over Kafka alike: the idempotency middleware reads it by default, the
// consumer's default token source reads it from each Kafka message, and the
// outbox relay writes each message's stable id into it. One name on both
// hops means a downstream consumer dedups relay repeats with no
// configuration.
const Header = "Idempotency-Key"
