// Command setup creates what the order pipeline needs: the schema
// (SHOP_SCHEMA) with the app tables, each worker's inbox and dead letters,
// the outbox, the HTTP idempotency keys, and the topics (SHOP_TOPIC_PREFIX)
// with 4 partitions each. It is idempotent.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/exactlyhq/exactly/examples/orders/internal/shop"
)

func main() {
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: setup\n\nCreates the schema, tables and topics of the order pipeline (see examples/orders/README.md).\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	cfg, err := shop.FromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "setup:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	pool, err := shop.Connect(ctx, cfg.DatabaseURL, "shop-setup", 4)
	if err != nil {
		fmt.Fprintln(os.Stderr, "setup:", err)
		os.Exit(1)
	}
	defer pool.Close()
	if err := cfg.Names.Setup(ctx, pool, cfg.Brokers); err != nil {
		fmt.Fprintln(os.Stderr, "setup:", err)
		os.Exit(1)
	}
	fmt.Printf("setup: schema %s and topics %s, %s (%d partitions) ready\n", cfg.Schema, cfg.OrdersPlaced(), cfg.PaymentsCaptured(), shop.Partitions)
}
