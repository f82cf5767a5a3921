// Command orders-api serves the shop's HTTP API:
//
//	POST /orders       place an order; headers Idempotency-Key and X-Customer;
//	                   body {"customer", "sku", "amount_cents"}; answers 201
//	GET  /orders/{id}  the order, its status and its payment and shipment counts
//	GET  /healthz      200 when Postgres answers
//
// POST /orders runs in the transaction of the idempotency middleware: the
// order row, its OrderPlaced event (through the outbox) and the stored 201
// response commit together, so a retry or a double click with the same key
// gets the same order back instead of a second one.
package main

import (
	"context"
	"errors"
	"flag"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/exactlyhq/exactly/examples/orders/internal/shop"
)

func main() { os.Exit(run()) }

func run() int {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	conns := flag.Int("db-conns", 16, "most Postgres connections")
	verbose := flag.Bool("v", false, "debug logs")
	flag.Parse()
	log := shop.Logger("orders-api", *verbose)
	cfg, err := shop.FromEnv()
	if err != nil {
		log.Error("bad environment", "err", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	pool, err := shop.Connect(ctx, cfg.DatabaseURL, "orders-api", int32(*conns))
	if err != nil {
		log.Error("cannot connect", "err", err)
		return 1
	}
	defer pool.Close()
	tel, err := shop.StartTelemetry("orders-api", log)
	if err != nil {
		log.Error("cannot start telemetry", "err", err)
		return 1
	}
	defer tel.Close()
	api, err := shop.NewAPI(pool, cfg.Names, log, tel.TracerProvider)
	if err != nil {
		log.Error("cannot build the API", "err", err)
		return 1
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Error("cannot listen", "err", err)
		return 1
	}
	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "schema", cfg.Schema, "topic", cfg.OrdersPlaced())
	select {
	case err := <-served:
		log.Error("server failed", "err", err)
		return 1
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight requests")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Error("shutdown incomplete", "err", err)
		return 1
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("server failed", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}
