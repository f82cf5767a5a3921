package shop

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
)

// LoadSummary is what loadgen writes with -out, and what verify -accepted
// and the demo read.
type LoadSummary struct {
	// Requested is how many orders loadgen placed (distinct keys).
	Requested int `json:"requested"`
	// Accepted is how many distinct order ids the API answered 201 for;
	// AcceptedIDs lists them.
	Accepted    int      `json:"accepted"`
	AcceptedIDs []string `json:"accepted_ids"`
	// Failed orders got no 201 before loadgen gave up on them (a 4xx, or
	// retries for longer than its give-up time).
	Failed int `json:"failed"`
	// IDMismatches counts keys answered with two different order ids: one
	// order created twice for one click. Must be 0.
	IDMismatches int `json:"id_mismatches"`
	// DuplicateClicks counts orders whose request was sent twice at once
	// with the same key.
	DuplicateClicks int `json:"duplicate_clicks"`
	// ClientRetries counts requests sent again, with the same key, after
	// the client timed out or lost the connection.
	ClientRetries int `json:"client_retries"`
	// Conflicts counts 409 answers (a repeat while the first request was
	// still running longer than the API's wait) that were retried.
	Conflicts int `json:"conflicts"`
	// ServerErrors counts 5xx answers that were retried.
	ServerErrors int `json:"server_errors"`
	// Replayed counts 201 answers replayed from the idempotency store.
	Replayed int `json:"replayed"`
	// Redeliveries counts OrderPlaced messages read back from Kafka and
	// produced again unchanged, headers included.
	Redeliveries int `json:"redeliveries"`
	// ElapsedSeconds is how long placing orders took; Throughput is
	// Accepted per second of it.
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	Throughput     float64 `json:"throughput_per_second"`
	// HTTPLatencyMS are percentiles of every HTTP request that got an
	// answer, in milliseconds.
	HTTPLatencyMS Percentiles `json:"http_latency_ms"`
}

// Percentiles summarise a latency distribution, in milliseconds.
type Percentiles struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// PercentilesOf returns the percentiles of ds (which it sorts).
func PercentilesOf(ds []time.Duration) Percentiles {
	if len(ds) == 0 {
		return Percentiles{}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	at := func(q float64) float64 {
		i := int(q*float64(len(ds))+0.5) - 1
		i = min(max(i, 0), len(ds)-1)
		return ms(ds[i])
	}
	return Percentiles{Count: len(ds), P50: at(0.50), P99: at(0.99), Max: ms(ds[len(ds)-1])}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// ReadJSON reads a JSON file into v.
func ReadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// WriteJSON writes v to path, indented, through a temporary file so that a
// reader never sees half of it.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Report is what verify finds.
type Report struct {
	Orders    int `json:"orders"`
	Payments  int `json:"payments"`
	Shipments int `json:"shipments"`
	Shipped   int `json:"shipped"` // orders with status 'shipped'

	// DuplicatesApplied counts payments and shipments beyond the first of
	// their order, plus order ids the API handed out twice for one key.
	DuplicatesApplied int `json:"duplicates_applied"`
	// Orphans are payments and shipments without an order.
	Orphans int `json:"orphans"`
	// Unpaid and Unshipped are orders without a payment or shipment.
	Unpaid    int `json:"unpaid"`
	Unshipped int `json:"unshipped"`
	// Lost are ids loadgen was answered 201 for that no order has.
	Lost int `json:"lost"`
	// Missing is Lost + Unpaid + Unshipped: effects that never happened.
	Missing int `json:"missing"`
	// Invented are orders loadgen was never told about.
	Invented int `json:"invented"`
	// AmountMismatches are payments whose amount differs from the order's.
	AmountMismatches int `json:"amount_mismatches"`
	// DeadLetters are messages the workers dead-lettered;
	// OutboxDeadLetters are rows the relay could not publish.
	DeadLetters       int `json:"dead_letters"`
	OutboxDeadLetters int `json:"outbox_dead_letters"`
	// OutboxBacklog is rows not yet published.
	OutboxBacklog int `json:"outbox_backlog"`
	// Lag is messages not yet committed by each consumer group, by group;
	// absent when Kafka could not be asked.
	Lag map[string]int64 `json:"lag,omitempty"`

	// AcceptedChecked tells whether Lost and Invented were checked
	// against a loadgen summary.
	AcceptedChecked bool `json:"accepted_checked"`
	// Examples are a few ids of each kind of problem, for a person to look
	// at.
	Examples map[string][]string `json:"examples,omitempty"`

	// OrderToShippedMS is the latency from the order's created_at to its
	// shipped_at, over shipped orders.
	OrderToShippedMS Percentiles `json:"order_to_shipped_ms"`
	// Drained tells whether every order was shipped, the outbox was empty
	// and the groups had no lag when the report was taken.
	Drained bool `json:"drained"`
	// OK is true when nothing was applied twice, lost, invented or
	// orphaned.
	OK bool `json:"ok"`
}

// Check inspects the database (and the consumer groups' lag in Kafka, when
// brokers are given). accepted, when not nil, are the order ids loadgen was
// answered 201 for; mismatches are its IDMismatches.
func Check(ctx context.Context, pool *pgxpool.Pool, names Names, brokers []string, accepted []string, mismatches int) (Report, error) {
	var r Report
	o, p, s := names.Table("orders"), names.Table("payments"), names.Table("shipments")
	err := pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM `+o+`),
		(SELECT count(*) FROM `+p+`),
		(SELECT count(*) FROM `+s+`),
		(SELECT count(*) FROM `+o+` WHERE status = 'shipped'),
		(SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM `+p+` GROUP BY order_id) x)
		  + (SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM `+s+` GROUP BY order_id) y),
		(SELECT count(*) FROM `+p+` x WHERE NOT EXISTS (SELECT 1 FROM `+o+` WHERE id = x.order_id))
		  + (SELECT count(*) FROM `+s+` x WHERE NOT EXISTS (SELECT 1 FROM `+o+` WHERE id = x.order_id)),
		(SELECT count(*) FROM `+o+` x WHERE NOT EXISTS (SELECT 1 FROM `+p+` WHERE order_id = x.id)),
		(SELECT count(*) FROM `+o+` x WHERE NOT EXISTS (SELECT 1 FROM `+s+` WHERE order_id = x.id)),
		(SELECT count(*) FROM `+p+` x JOIN `+o+` y ON y.id = x.order_id WHERE x.amount_cents <> y.amount_cents),
		(SELECT count(*) FROM `+names.Table("dead_letters")+`),
		(SELECT count(*) FROM `+names.Table("outbox_dead_letters")+`),
		(SELECT count(*) FROM `+names.Table("outbox")+` WHERE published_at IS NULL)`).
		Scan(&r.Orders, &r.Payments, &r.Shipments, &r.Shipped, &r.DuplicatesApplied, &r.Orphans, &r.Unpaid, &r.Unshipped,
			&r.AmountMismatches, &r.DeadLetters, &r.OutboxDeadLetters, &r.OutboxBacklog)
	if err != nil {
		return r, fmt.Errorf("verify: %w", err)
	}
	r.DuplicatesApplied += mismatches
	r.Examples = map[string][]string{}
	examples := func(kind, query string, args ...any) error {
		rows, err := pool.Query(ctx, query+" LIMIT 5", args...)
		if err != nil {
			return fmt.Errorf("verify: %s: %w", kind, err)
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			r.Examples[kind] = append(r.Examples[kind], id)
		}
		return rows.Err()
	}
	if r.DuplicatesApplied > mismatches {
		if err := examples("duplicated", `SELECT order_id::text FROM (SELECT order_id FROM `+p+` GROUP BY order_id HAVING count(*) > 1
			UNION SELECT order_id FROM `+s+` GROUP BY order_id HAVING count(*) > 1) d`); err != nil {
			return r, err
		}
	}
	if r.Unshipped > 0 {
		if err := examples("unshipped", `SELECT id::text FROM `+o+` x WHERE NOT EXISTS (SELECT 1 FROM `+s+` WHERE order_id = x.id)`); err != nil {
			return r, err
		}
	}
	if accepted != nil {
		r.AcceptedChecked = true
		err := pool.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM unnest($1::uuid[]) a(id) WHERE NOT EXISTS (SELECT 1 FROM `+o+` WHERE id = a.id)),
			(SELECT count(*) FROM `+o+` x WHERE NOT EXISTS (SELECT 1 FROM unnest($1::uuid[]) a(id) WHERE a.id = x.id))`, accepted).Scan(&r.Lost, &r.Invented)
		if err != nil {
			return r, fmt.Errorf("verify: accepted ids: %w", err)
		}
		if r.Lost > 0 {
			if err := examples("lost", `SELECT a.id::text FROM unnest($1::uuid[]) a(id) WHERE NOT EXISTS (SELECT 1 FROM `+o+` WHERE id = a.id)`, accepted); err != nil {
				return r, err
			}
		}
		if r.Invented > 0 {
			if err := examples("invented", `SELECT id::text FROM `+o+` x WHERE NOT EXISTS (SELECT 1 FROM unnest($1::uuid[]) a(id) WHERE a.id = x.id)`, accepted); err != nil {
				return r, err
			}
		}
	}
	var q []*float64
	if err := pool.QueryRow(ctx, `SELECT percentile_disc(ARRAY[0.5, 0.99, 1]) WITHIN GROUP (ORDER BY extract(epoch FROM shipped_at - created_at) * 1000)
		FROM `+o+` WHERE shipped_at IS NOT NULL`).Scan(&q); err != nil {
		return r, fmt.Errorf("verify: latency: %w", err)
	}
	if len(q) == 3 && q[0] != nil {
		r.OrderToShippedMS = Percentiles{Count: r.Shipped, P50: *q[0], P99: *q[1], Max: *q[2]}
	}
	if len(brokers) > 0 {
		if lag, err := names.Lag(ctx, brokers); err == nil {
			r.Lag = lag
		}
	}
	r.Missing = r.Lost + r.Unpaid + r.Unshipped
	r.Drained = r.Unshipped == 0 && r.OutboxBacklog == 0 && r.Lag != nil && r.Lag[names.PaymentsGroup()] == 0 && r.Lag[names.ShippingGroup()] == 0
	r.OK = r.DuplicatesApplied == 0 && r.Missing == 0 && r.Invented == 0 && r.Orphans == 0 && r.AmountMismatches == 0
	return r, nil
}

// Lag returns, for each consumer group of the pipeline, how many messages
// of its topic are past its committed offsets.
func (n Names) Lag(ctx context.Context, brokers []string) (map[string]int64, error) {
	cl := client(brokers)
	defer closeClient(cl)
	out := map[string]int64{}
	for group, topic := range map[string]string{n.PaymentsGroup(): n.OrdersPlaced(), n.ShippingGroup(): n.PaymentsCaptured()} {
		parts := make([]int, Partitions)
		reqs := make([]kafka.OffsetRequest, Partitions)
		for i := range parts {
			parts[i] = i
			reqs[i] = kafka.LastOffsetOf(i)
		}
		ends, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
		if err != nil {
			return nil, err
		}
		committed, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
		if err != nil {
			return nil, err
		}
		if committed.Error != nil {
			return nil, committed.Error
		}
		at := map[int]int64{}
		for _, p := range committed.Topics[topic] {
			if p.Error != nil {
				return nil, p.Error
			}
			at[p.Partition] = p.CommittedOffset
		}
		var lag int64
		for _, p := range ends.Topics[topic] {
			if p.Error != nil {
				return nil, p.Error
			}
			c := at[p.Partition]
			if c < 0 { // nothing committed yet: everything is lag
				c = 0
			}
			lag += max(p.LastOffset-c, 0)
		}
		out[group] = lag
	}
	return out, nil
}

// FormatMS formats milliseconds for people: 3.2ms, 48ms, 6.21s.
func FormatMS(v float64) string {
	d := time.Duration(v * float64(time.Millisecond))
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= 10*time.Millisecond:
		return d.Round(time.Millisecond).String()
	default:
		return d.Round(100 * time.Microsecond).String()
	}
}

// EndOffsets returns the next offset of each partition of topic, without
// ever asking the broker to create the topic.
func EndOffsets(ctx context.Context, brokers []string, topic string) (map[int]int64, error) {
	cl := client(brokers)
	defer closeClient(cl)
	reqs := make([]kafka.OffsetRequest, Partitions)
	for i := range reqs {
		reqs[i] = kafka.LastOffsetOf(i)
	}
	resp, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, err
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("topic %s partition %d: %w", topic, p.Partition, p.Error)
		}
		out[p.Partition] = p.LastOffset
	}
	if len(out) != Partitions {
		return nil, fmt.Errorf("topic %s: %d partitions answered, want %d (run setup)", topic, len(out), Partitions)
	}
	return out, nil
}
