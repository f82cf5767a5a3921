// Command relay publishes the shop's outbox (OrderPlaced and PaymentCaptured
// events) to Kafka. Run as many as you like: the outbox's shards are shared
// by advisory locks, and a dead relay's shards are taken over within a
// second.
package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"syscall"

	"github.com/exactlyhq/exactly/examples/orders/internal/shop"
	"github.com/exactlyhq/exactly/outbox"
)

func main() { os.Exit(run()) }

func run() int {
	verbose := flag.Bool("v", false, "debug logs")
	flag.Parse()
	log := shop.Logger("relay", *verbose)
	cfg, err := shop.FromEnv()
	if err != nil {
		log.Error("bad environment", "err", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The relay holds one connection per shard it owns, plus its LISTEN
	// connection and the ones its rounds use.
	pool, err := shop.Connect(ctx, cfg.DatabaseURL, "relay", int32(outbox.ShardsDefault+6))
	if err != nil {
		log.Error("cannot connect", "err", err)
		return 1
	}
	defer pool.Close()
	tel, err := shop.StartTelemetry("relay", log)
	if err != nil {
		log.Error("cannot start telemetry", "err", err)
		return 1
	}
	defer tel.Close()
	relay, err := outbox.NewRelay(pool, outbox.RelayConfig{
		Outbox:         cfg.Outbox(),
		Brokers:        cfg.Brokers,
		Transport:      cfg.Transport(),
		Logger:         log,
		MeterProvider:  tel.MeterProvider,
		TracerProvider: tel.TracerProvider,
	})
	if err != nil {
		log.Error("bad relay configuration", "err", err)
		return 1
	}
	log.Info("relay starting", "schema", cfg.Schema)
	if err := relay.Run(ctx); err != nil {
		log.Error("relay failed", "err", err)
		return 1
	}
	log.Info("relay stopped")
	return 0
}
