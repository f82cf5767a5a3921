package shop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/outbox"
)

// Payments is the payments worker's handler: for each OrderPlaced it records
// one payment, marks the order paid and enqueues PaymentCaptured, all in the
// transaction that claimed the event's token in the inbox.
//
// It has no duplicate check of its own on purpose: the inbox is what makes a
// redelivered or re-produced OrderPlaced a no-op. If a duplicate ever got
// through, the payment would be inserted again and verify would report it.
type Payments struct {
	names Names
	ob    *outbox.Outbox
	log   *slog.Logger
	// Captured counts payments recorded by committed and rolled-back
	// transactions alike; it is for progress logs only.
	Captured atomic.Int64
}

// NewPayments returns the payments handler. With a TracerProvider, each
// PaymentCaptured it enqueues is a "create" span under the consumer's span
// of the OrderPlaced; nil starts no span.
func NewPayments(names Names, log *slog.Logger, tp trace.TracerProvider) (*Payments, error) {
	cfg := names.Outbox()
	cfg.TracerProvider = tp
	ob, err := outbox.New(cfg)
	if err != nil {
		return nil, err
	}
	return &Payments{names: names, ob: ob, log: log}, nil
}

// Handler returns the consumer.Handler that decodes OrderPlaced events.
func (p *Payments) Handler() consumer.Handler { return consumer.JSON(p.handle) }

func (p *Payments) handle(ctx context.Context, tx pgx.Tx, m consumer.Message, ev OrderPlaced) error {
	if !isUUID(ev.OrderID) || ev.AmountCents <= 0 {
		return consumer.Permanent(fmt.Errorf("invalid OrderPlaced: order_id %q, amount_cents %d", ev.OrderID, ev.AmountCents))
	}
	tag, err := tx.Exec(ctx, `UPDATE `+p.names.Table("orders")+` SET status = 'paid', paid_at = now() WHERE id = $1 AND status = 'placed'`, ev.OrderID)
	if err != nil {
		return err
	}
	if tag.RowsAffected() != 1 {
		status, err := orderStatus(ctx, tx, p.names, ev.OrderID)
		if err != nil {
			return err
		}
		// An order paid already means a duplicate got past the inbox. Do
		// not hide it: record the payment again so that verify sees it.
		p.log.Error("OrderPlaced for an order that is not 'placed': a duplicate got through", "order", ev.OrderID, "status", status, "token", m.Token.String())
	}
	var pc PaymentCaptured
	pc.OrderID, pc.AmountCents = ev.OrderID, ev.AmountCents
	if err := tx.QueryRow(ctx, `INSERT INTO `+p.names.Table("payments")+` (order_id, amount_cents) VALUES ($1, $2) RETURNING id, created_at`,
		ev.OrderID, ev.AmountCents).Scan(&pc.PaymentID, &pc.CapturedAt); err != nil {
		return err
	}
	value, err := json.Marshal(pc)
	if err != nil {
		return err
	}
	if _, err := p.ob.EnqueueTx(ctx, tx, outbox.Message{
		Topic:   p.names.PaymentsCaptured(),
		Key:     m.Key, // the order id: per-order order holds across hops
		Value:   value,
		Headers: []kafka.Header{{Key: "event-type", Value: []byte("PaymentCaptured")}},
	}); err != nil {
		return err
	}
	p.Captured.Add(1)
	return nil
}

// Shipping is the shipping worker's handler: for each PaymentCaptured it
// records one shipment and marks the order shipped. Like Payments it relies
// on the inbox alone to skip duplicates.
type Shipping struct {
	names Names
	log   *slog.Logger
	// Shipped counts shipments, for progress logs only.
	Shipped atomic.Int64
}

// NewShipping returns the shipping handler.
func NewShipping(names Names, log *slog.Logger) *Shipping {
	return &Shipping{names: names, log: log}
}

// Handler returns the consumer.Handler that decodes PaymentCaptured events.
func (s *Shipping) Handler() consumer.Handler { return consumer.JSON(s.handle) }

func (s *Shipping) handle(ctx context.Context, tx pgx.Tx, m consumer.Message, ev PaymentCaptured) error {
	if !isUUID(ev.OrderID) {
		return consumer.Permanent(fmt.Errorf("invalid PaymentCaptured: order_id %q", ev.OrderID))
	}
	tag, err := tx.Exec(ctx, `UPDATE `+s.names.Table("orders")+` SET status = 'shipped', shipped_at = now() WHERE id = $1 AND status = 'paid'`, ev.OrderID)
	if err != nil {
		return err
	}
	if tag.RowsAffected() != 1 {
		status, err := orderStatus(ctx, tx, s.names, ev.OrderID)
		if err != nil {
			return err
		}
		if status == "placed" {
			// Cannot happen: the payment that made the order paid enqueued
			// this event in its own transaction. Retry, then dead-letter.
			return fmt.Errorf("order %s is not paid yet", ev.OrderID)
		}
		s.log.Error("PaymentCaptured for an order that is not 'paid': a duplicate got through", "order", ev.OrderID, "status", status, "token", m.Token.String())
	}
	if _, err := tx.Exec(ctx, `INSERT INTO `+s.names.Table("shipments")+` (order_id) VALUES ($1)`, ev.OrderID); err != nil {
		return err
	}
	s.Shipped.Add(1)
	return nil
}

// orderStatus returns the order's status, or a permanent error when there is
// no such order: retrying cannot make it appear.
func orderStatus(ctx context.Context, tx pgx.Tx, names Names, id string) (string, error) {
	var status string
	err := tx.QueryRow(ctx, `SELECT status FROM `+names.Table("orders")+` WHERE id = $1`, id).Scan(&status)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", consumer.Permanent(fmt.Errorf("no order %s", id))
	}
	return status, err
}

// LogProgress logs what counter counted in each period until ctx ends.
// Counts include handler calls whose transaction later rolled back.
func LogProgress(ctx context.Context, log *slog.Logger, every time.Duration, what string, counter *atomic.Int64) {
	if every <= 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var last int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n := counter.Load()
			if n != last {
				log.Info("progress", what, n-last, "since_start", n, "period", every)
				last = n
			}
		}
	}
}
