// Package exactly holds the vocabulary the packages of this module share.
// The work is done by its subpackages: consumer (a Kafka consumer group whose
// handlers apply each message once), outbox (messages enqueued in the
// caller's transaction and published by a relay), idempotency (HTTP
// middleware), inbox (the token table underneath them) and migrate.
package exactly
