// Command payments-worker consumes <prefix>orders.placed in the consumer
// group <prefix>payments. For each OrderPlaced it records one payment, marks
// the order paid and enqueues PaymentCaptured (keyed by the order id) through
// the outbox, all in the transaction that claims the event's Idempotency-Key
// in the inbox (scope "payments"). Run several: the group shares the 4
// partitions among them.
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
		Name:     "payments-worker",
		Counts:   "payments recorded",
		Consumer: shop.Config.PaymentsConsumer,
		Handler: func(names shop.Names, log *slog.Logger, tp trace.TracerProvider) (consumer.Handler, *atomic.Int64, error) {
			p, err := shop.NewPayments(names, log, tp)
			if err != nil {
				return nil, nil, err
			}
			return p.Handler(), &p.Captured, nil
		},
	}))
}
