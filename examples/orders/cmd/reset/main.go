// Command reset drops the order pipeline's schema (SHOP_SCHEMA) with all its
// data and deletes its topics and consumer groups (SHOP_TOPIC_PREFIX). Stop
// the pipeline's programs first.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/exactlyhq/exactly/examples/orders/internal/shop"
)

func main() {
	os.Exit(shop.AdminMain("reset", "Drops the schema and deletes the topics and consumer groups of the order pipeline.",
		func(ctx context.Context, cfg shop.Config, pool *pgxpool.Pool) (string, error) {
			if err := cfg.Names.Reset(ctx, pool, cfg.Kafka); err != nil {
				return "", err
			}
			return fmt.Sprintf("schema %s dropped; topics %s, %s and their consumer groups deleted", cfg.Schema, cfg.OrdersPlaced(), cfg.PaymentsCaptured()), nil
		}))
}
