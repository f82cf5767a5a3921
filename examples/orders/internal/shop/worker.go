package shop

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/exactlyhq/exactly/consumer"
)

// Worker describes a worker program: its consumer and its handler.
type Worker struct {
	// Name is the program's name, in logs and as Postgres application_name.
	Name string
	// Counts names what the progress counter counts ("payments recorded").
	Counts string
	// Consumer returns the consumer configuration, without pool, logger,
	// meter provider and tracer provider.
	Consumer func(Config) consumer.Config
	// Handler builds the handler and the counter its progress logs read.
	// The TracerProvider (nil: no spans) is the consumer's, for the
	// handler's own library configs (the outbox).
	Handler func(Names, *slog.Logger, trace.TracerProvider) (consumer.Handler, *atomic.Int64, error)
}

// RunWorker is a worker program's main: it reads its flags and the
// environment, connects, starts its telemetry (metrics, spans), and
// consumes until SIGINT or SIGTERM. It returns the exit status.
func RunWorker(w Worker) int {
	verbose := flag.Bool("v", false, "debug logs")
	every := flag.Duration("stats", 10*time.Second, "how often to log progress (0: never)")
	flag.Parse()
	log := Logger(w.Name, *verbose)
	cfg, err := FromEnv()
	if err != nil {
		log.Error("bad environment", "err", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Up to KeyConcurrency transactions per assigned partition at a time,
	// plus start-up checks.
	pool, err := Connect(ctx, cfg.DatabaseURL, w.Name, Partitions*KeyConcurrency+4)
	if err != nil {
		log.Error("cannot connect", "err", err)
		return 1
	}
	defer pool.Close()
	tel, err := StartTelemetry(w.Name, log)
	if err != nil {
		log.Error("cannot start telemetry", "err", err)
		return 1
	}
	defer tel.Close()
	h, counter, err := w.Handler(cfg.Names, log, tel.TracerProvider)
	if err != nil {
		log.Error("bad handler configuration", "err", err)
		return 1
	}
	ccfg := w.Consumer(cfg)
	ccfg.Pool, ccfg.Logger, ccfg.MeterProvider, ccfg.TracerProvider = pool, log, tel.MeterProvider, tel.TracerProvider
	c, err := consumer.New(ccfg, h)
	if err != nil {
		log.Error("bad consumer configuration", "err", err)
		return 1
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		LogProgress(ctx, log, *every, w.Counts, counter)
	}()
	defer wg.Wait()
	if err := c.Run(ctx); err != nil {
		log.Error("consumer failed", "err", err)
		stop() // end the progress logger too
		return 1
	}
	return 0
}
