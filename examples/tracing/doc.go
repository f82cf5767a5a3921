// Package tracing holds the test that one request through the idempotency
// middleware, the outbox, the relay, Kafka and a consumer makes one trace.
// It lives in the examples module: it needs the OpenTelemetry SDK, which the
// library does not depend on.
package tracing
