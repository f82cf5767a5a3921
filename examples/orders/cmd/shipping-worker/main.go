// Command shipping-worker consumes <prefix>payments.captured in the consumer
// group <prefix>shipping. For each PaymentCaptured it records one shipment
// and marks the order shipped, in the transaction that claims the event's
// Idempotency-Key (the outbox message id) in the inbox (scope "shipping").
package main

import (
	"log/slog"
	"os"
	"sync/atomic"

	"go.opentelemetry.io/otel/trace"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/examples/orders/internal/shop"
)

func main() {
	os.Exit(shop.RunWorker(shop.Worker{
		Name:     "shipping-worker",
		Counts:   "shipments recorded",
		Consumer: shop.Config.ShippingConsumer,
		Handler: func(names shop.Names, log *slog.Logger, _ trace.TracerProvider) (consumer.Handler, *atomic.Int64, error) {
			s := shop.NewShipping(names, log)
			return s.Handler(), &s.Shipped, nil
		},
	}))
}
