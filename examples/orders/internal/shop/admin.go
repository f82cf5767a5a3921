package shop

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// AdminMain runs a one-shot command (setup, reset) named name: it parses
// the flags, reads the environment, connects, runs act within two minutes
// and prints what act reports. It returns the exit status: 2 for a bad
// environment, 1 for a failure.
func AdminMain(name, about string, act func(context.Context, Config, *pgxpool.Pool) (string, error)) int {
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s\n\n%s\n", name, about)
		flag.PrintDefaults()
	}
	flag.Parse()
	cfg, err := FromEnv()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	pool, err := Connect(ctx, cfg.DatabaseURL, "shop-"+name, 4)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	defer pool.Close()
	done, err := act(ctx, cfg, pool)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	fmt.Printf("%s: %s\n", name, done)
	return 0
}
