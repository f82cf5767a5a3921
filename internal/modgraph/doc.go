// Package modgraph holds the tests that keep the library's dependencies
// lean. It has no code of its own.
//
// A program that imports the library's packages should get Postgres and
// Kafka clients and the OpenTelemetry API, nothing more: no Prometheus
// client, no OpenTelemetry SDK or exporter (those are the application's
// choice; the order-pipeline example makes it in its own module,
// examples/go.mod). And the packages that know tokens, not transports
// (inbox, idempotency), import no Kafka client.
package modgraph
