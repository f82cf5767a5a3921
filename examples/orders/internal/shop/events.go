package shop

import "time"

// OrderPlaced is published on <prefix>orders.placed, keyed by order id, when
// the API accepts an order. The outbox gives it a message id in the
// Idempotency-Key header; the payments worker's inbox dedups on it.
type OrderPlaced struct {
	OrderID     string    `json:"order_id"`
	Customer    string    `json:"customer"`
	SKU         string    `json:"sku"`
	AmountCents int       `json:"amount_cents"`
	PlacedAt    time.Time `json:"placed_at"`
}

// PaymentCaptured is published on <prefix>payments.captured, keyed by order
// id, in the transaction that recorded the payment.
type PaymentCaptured struct {
	OrderID     string    `json:"order_id"`
	PaymentID   int64     `json:"payment_id"`
	AmountCents int       `json:"amount_cents"`
	CapturedAt  time.Time `json:"captured_at"`
}

// Order is an order as the API shows it.
type Order struct {
	ID          string     `json:"id"`
	Customer    string     `json:"customer"`
	SKU         string     `json:"sku"`
	AmountCents int        `json:"amount_cents"`
	Status      string     `json:"status"`
	CreatedAt   time.Time  `json:"created_at"`
	PaidAt      *time.Time `json:"paid_at,omitempty"`
	ShippedAt   *time.Time `json:"shipped_at,omitempty"`
	// Payments and Shipments count the rows recorded for the order; both
	// end at exactly 1.
	Payments  int `json:"payments"`
	Shipments int `json:"shipments"`
}
