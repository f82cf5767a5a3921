// Command verify checks the order pipeline's outcome in Postgres: every
// order has exactly one payment and exactly one shipment, no payment or
// shipment lacks an order, and, with -accepted (a loadgen summary), every
// order loadgen was answered 201 for exists (none lost) and no other order
// exists (none invented).
//
// With -wait it first waits for the pipeline to drain: every order shipped,
// the outbox empty and both consumer groups caught up in Kafka (so that
// re-delivered messages still in flight are judged too).
//
// It exits 0 when nothing was duplicated, lost, invented or orphaned, 1 when
// something was, and 2 when it could not check.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/exactlyhq/exactly/examples/orders/internal/shop"
)

func main() { os.Exit(run()) }

func run() int {
	acceptedPath := flag.String("accepted", "", "loadgen summary JSON: check that its accepted orders exist and no other does")
	wait := flag.Duration("wait", 0, "wait up to this long for the pipeline to drain before judging")
	settle := flag.Duration("settle", 20*time.Second, "once every order is shipped, wait at most this long (within -wait) for the consumer groups' lag to reach 0")
	out := flag.String("out", "", "write the report as JSON to this file")
	flag.Parse()
	cfg, err := shop.FromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "verify:", err)
		return 2
	}
	var accepted []string
	mismatches := 0
	if *acceptedPath != "" {
		var sum shop.LoadSummary
		if err := shop.ReadJSON(*acceptedPath, &sum); err != nil {
			fmt.Fprintln(os.Stderr, "verify:", err)
			return 2
		}
		accepted = append([]string{}, sum.AcceptedIDs...) // never nil: an empty list is checked too
		mismatches = sum.IDMismatches
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	pool, err := shop.Connect(ctx, cfg.DatabaseURL, "shop-verify", 4)
	if err != nil {
		fmt.Fprintln(os.Stderr, "verify:", err)
		return 2
	}
	defer pool.Close()

	start := time.Now()
	deadline := start.Add(*wait)
	var allShippedAt time.Time
	var lastPrint time.Time
	var r shop.Report
	for {
		r, err = shop.Check(ctx, pool, cfg.Names, cfg.Brokers, accepted, mismatches)
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "verify: interrupted")
			return 2
		}
		now := time.Now()
		if err != nil && (now.After(deadline) || *wait == 0) {
			fmt.Fprintln(os.Stderr, "verify:", err)
			return 2
		}
		if err == nil {
			if *wait == 0 || r.Drained || now.After(deadline) {
				break
			}
			if r.Unshipped == 0 && r.OutboxBacklog == 0 {
				if allShippedAt.IsZero() {
					allShippedAt = now
				}
				if now.Sub(allShippedAt) >= *settle {
					fmt.Printf("verify: every order is shipped but the consumer groups still lag (%s) after %v; judging anyway\n", lagString(r.Lag), *settle)
					break
				}
			} else {
				allShippedAt = time.Time{}
			}
		}
		if now.Sub(lastPrint) >= 2*time.Second {
			lastPrint = now
			if err != nil {
				fmt.Printf("verify: waiting (%s/%s): %v\n", now.Sub(start).Round(time.Second), *wait, err)
			} else {
				fmt.Printf("verify: waiting for the pipeline to drain (%s/%s): orders %d, paid %d, shipped %d, outbox %d, lag %s\n",
					now.Sub(start).Round(time.Second), *wait, r.Orders, r.Orders-r.Unpaid, r.Shipped, r.OutboxBacklog, lagString(r.Lag))
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	if *wait > 0 && !r.Drained {
		fmt.Printf("verify: not drained after %s (unshipped %d, outbox %d, lag %s)\n", time.Since(start).Round(time.Second), r.Unshipped, r.OutboxBacklog, lagString(r.Lag))
	}
	printReport(cfg, r)
	if *out != "" {
		if err := shop.WriteJSON(*out, r); err != nil {
			fmt.Fprintln(os.Stderr, "verify:", err)
			return 2
		}
	}
	if !r.OK {
		return 1
	}
	return 0
}

func lagString(lag map[string]int64) string {
	if lag == nil {
		return "unknown"
	}
	var parts []string
	for g, n := range lag {
		parts = append(parts, fmt.Sprintf("%s=%d", g, n))
	}
	if len(parts) == 2 && parts[0] > parts[1] {
		parts[0], parts[1] = parts[1], parts[0]
	}
	return strings.Join(parts, " ")
}

func printReport(cfg shop.Config, r shop.Report) {
	fmt.Printf("verify: schema %s: orders %d, payments %d, shipments %d\n", cfg.Schema, r.Orders, r.Payments, r.Shipments)
	row := func(name string, n int, note string) {
		fmt.Printf("  %-20s %6d  %s\n", name, n, note)
	}
	row("duplicates applied", r.DuplicatesApplied, "must be 0: payments or shipments beyond one per order")
	row("missing", r.Missing, fmt.Sprintf("must be 0: lost %d, unpaid %d, unshipped %d", r.Lost, r.Unpaid, r.Unshipped))
	if r.AcceptedChecked {
		row("invented", r.Invented, "must be 0: orders loadgen was never told about")
	}
	row("orphans", r.Orphans, "must be 0: payments or shipments without an order")
	row("amount mismatches", r.AmountMismatches, "must be 0")
	row("dead letters", r.DeadLetters+r.OutboxDeadLetters, fmt.Sprintf("consumer %d, outbox %d", r.DeadLetters, r.OutboxDeadLetters))
	if r.OrderToShippedMS.Count > 0 {
		fmt.Printf("  %-20s p50 %s  p99 %s  max %s\n", "order→shipped", shop.FormatMS(r.OrderToShippedMS.P50), shop.FormatMS(r.OrderToShippedMS.P99), shop.FormatMS(r.OrderToShippedMS.Max))
	}
	for kind, ids := range r.Examples {
		fmt.Printf("  e.g. %s: %s\n", kind, strings.Join(ids, ", "))
	}
	switch {
	case !r.OK:
		fmt.Println("verify: FAILED")
	case !r.AcceptedChecked:
		fmt.Println("verify: OK: every order paid once and shipped once (run with -accepted to check for lost orders)")
	default:
		fmt.Println("verify: OK: every accepted order paid once and shipped once; none lost, none invented")
	}
}
