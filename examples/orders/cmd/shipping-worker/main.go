// Command shipping-worker consumes <prefix>payments.captured in the consumer
// group <prefix>shipping. For each PaymentCaptured it records one shipment
// and marks the order shipped, in the transaction that claims the event's
// Idempotency-Key (the outbox message id) in the inbox (scope "shipping").
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
	log := shop.Logger("shipping-worker", *verbose)
	cfg, err := shop.FromEnv()
	if err != nil {
		log.Error("bad environment", "err", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	pool, err := shop.Connect(ctx, cfg.DatabaseURL, "shipping-worker", shop.Partitions+4)
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
	shipping := shop.NewShipping(cfg.Names, log)
	ccfg := cfg.ShippingConsumer()
	ccfg.Pool, ccfg.Logger, ccfg.MeterProvider = pool, log, tel.MeterProvider
	c, err := consumer.New(ccfg, shipping.Handler())
	if err != nil {
		log.Error("bad consumer configuration", "err", err)
		return 1
	}
	go shop.LogProgress(ctx, log, *every, "shipments recorded", &shipping.Shipped)
	if err := c.Run(ctx); err != nil {
		log.Error("consumer failed", "err", err)
		return 1
	}
	return 0
}
