// Command setup creates what the order pipeline needs: the schema
// (SHOP_SCHEMA) with the app tables, each worker's inbox and dead letters,
// the outbox, the HTTP idempotency keys, and the topics (SHOP_TOPIC_PREFIX)
// with 4 partitions each. It is idempotent.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/exactlyhq/exactly/examples/orders/internal/shop"
)

func main() {
	os.Exit(shop.AdminMain("setup", "Creates the schema, tables and topics of the order pipeline (see examples/orders/README.md).",
		func(ctx context.Context, cfg shop.Config, pool *pgxpool.Pool) (string, error) {
			if err := cfg.Names.Setup(ctx, pool, cfg.Kafka); err != nil {
				return "", err
			}
			return fmt.Sprintf("schema %s and topics %s, %s (%d partitions) ready", cfg.Schema, cfg.OrdersPlaced(), cfg.PaymentsCaptured(), shop.Partitions), nil
		}))
}
