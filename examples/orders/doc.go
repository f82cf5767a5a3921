// Package orders is a runnable example of exactly: an order pipeline of
// separate programs (an HTTP API, an outbox relay, a payments worker and a
// shipping worker) plus a load generator, a verifier and a demo that kills
// workers while orders flow and then proves that every order was paid once
// and shipped once.
//
// The programs live under cmd/, their shared code in internal/shop. Start
// with `make demo`; README.md explains each program.
package orders
