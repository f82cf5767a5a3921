// Command payments-worker consumes <prefix>orders.placed in the consumer
// group <prefix>payments. For each OrderPlaced it records one payment, marks
// the order paid and enqueues PaymentCaptured (keyed by the order id) through
// the outbox, all in the transaction that claims the event's Idempotency-Key
// in the inbox (scope "payments"). Run several: the group shares the 4
// partitions among them.
package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/examples/orders/internal/shop"
)

func main() { os.Exit(run()) }

func run() int {
	verbose := flag.Bool("v", false, "debug logs")
	every := flag.Duration("stats", 10*time.Second, "how often to log progress (0: never)")
	flag.Parse()
	log := shop.Logger("payments-worker", *verbose)
	cfg, err := shop.FromEnv()
	if err != nil {
		log.Error("bad environment", "err", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// One transaction per assigned partition at a time, plus start-up checks.
	pool, err := shop.Connect(ctx, cfg.DatabaseURL, "payments-worker", shop.Partitions+4)
	if err != nil {
		log.Error("cannot connect", "err", err)
		return 1
	}
	defer pool.Close()
	tel, err := shop.StartTelemetry(log)
	if err != nil {
		log.Error("cannot serve metrics", "err", err)
		return 1
	}
	defer tel.Close()
	payments, err := shop.NewPayments(cfg.Names, log)
	if err != nil {
		log.Error("bad outbox configuration", "err", err)
		return 1
	}
	ccfg := cfg.PaymentsConsumer()
	ccfg.Pool, ccfg.Logger, ccfg.MeterProvider = pool, log, tel.MeterProvider
	c, err := consumer.New(ccfg, payments.Handler())
	if err != nil {
		log.Error("bad consumer configuration", "err", err)
		return 1
	}
	go shop.LogProgress(ctx, log, *every, "payments recorded", &payments.Captured)
	if err := c.Run(ctx); err != nil {
		log.Error("consumer failed", "err", err)
		return 1
	}
	return 0
}
