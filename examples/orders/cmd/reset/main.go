// Command reset drops the order pipeline's schema (SHOP_SCHEMA) with all its
// data and deletes its topics and consumer groups (SHOP_TOPIC_PREFIX). Stop
// the pipeline's programs first.
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
		fmt.Fprintf(flag.CommandLine.Output(), "usage: reset\n\nDrops the schema and deletes the topics and consumer groups of the order pipeline.\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	cfg, err := shop.FromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "reset:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	pool, err := shop.Connect(ctx, cfg.DatabaseURL, "shop-reset", 4)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reset:", err)
		os.Exit(1)
	}
	defer pool.Close()
	if err := cfg.Names.Reset(ctx, pool, cfg.Brokers); err != nil {
		fmt.Fprintln(os.Stderr, "reset:", err)
		os.Exit(1)
	}
	fmt.Printf("reset: schema %s dropped; topics %s, %s and their consumer groups deleted\n", cfg.Schema, cfg.OrdersPlaced(), cfg.PaymentsCaptured())
}
