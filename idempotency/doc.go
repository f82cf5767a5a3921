// Package idempotency makes net/http handlers safe to retry, following the
// IETF Idempotency-Key header draft and Stripe's behaviour, backed by the
// inbox.
//
// Wrap a handler with [Middleware.Wrap]. For each request with an
// Idempotency-Key header:
//
//   - the first request runs the handler inside a Postgres transaction
//     (reach it with [Tx]); its status, chosen headers and body are stored in
//     the same transaction, so the handler's writes and the stored response
//     commit together;
//   - a repeat gets the stored response, with the header
//     "Idempotent-Replayed: true";
//   - a repeat with a different method, path or body gets 422;
//   - with a partitioned inbox (inbox.LayoutPartitioned), a UUIDv7 key
//     older than the inbox keeps gets 422 too: its stored response may have
//     been dropped, so the request is not carried out again;
//   - a repeat while the first is still running gets 409 with Retry-After
//     (or waits up to Config.InFlightWait for the first to finish);
//   - a request without the key gets 400 (unless Config.Optional), and so
//     does one with two Idempotency-Key headers (ambiguous) or with a path
//     that is not UTF-8 text or holds control characters (%00, %FF, %0A);
//     a path longer than Config.MaxPathLen (1024 bytes) gets 414;
//   - a handler that returns without writing is stored and replayed as the
//     200 net/http sent for it;
//   - a handler that answers 5xx, panics, or writes more than
//     Config.MaxResponseBytes is rolled back and leaves no key behind, so a
//     retry runs it again.
//
// Keys are scoped by endpoint (Config.Endpoint) and by authenticated caller
// (Config.Caller): one caller can neither replay nor block another's key.
//
// Keys live in an inbox table; prune them with inbox.Store.Prune (a scope
// per endpoint and caller) or `exactly prune`. Stripe keeps keys for 24
// hours; keep them at least as long as your clients retry.
package idempotency
