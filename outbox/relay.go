package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactlyhq/exactly/internal/kafkaprobe"
	"github.com/exactlyhq/exactly/internal/retry"
)

// Relay publishes outbox rows to Kafka. Run any number of relays for one
// table: each shard is owned by one relay at a time (a session advisory
// lock), and the others take it over within LockInterval when its owner dies.
type Relay struct {
	pool   *pgxpool.Pool
	cfg    RelayConfig
	writer *kafka.Writer
	ownW   bool // the relay built the writer and closes it
	ob     *Outbox
	log    *slog.Logger

	published, failures, dead metric.Int64Counter
	latency                   metric.Float64Histogram
	owned                     atomic.Int64
	attrs                     metric.MeasurementOption

	tracer trace.Tracer // nil without RelayConfig.TracerProvider

	running atomic.Bool
	pubs    []publisher // by shard, set by Run
}

// NewRelay returns a Relay for the outbox table cfg.Outbox names.
func NewRelay(pool *pgxpool.Pool, cfg RelayConfig) (*Relay, error) {
	if pool == nil {
		return nil, errors.New("outbox: NewRelay: pool is nil")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ob, err := New(cfg.Outbox)
	if err != nil {
		return nil, err
	}
	r := &Relay{pool: pool, cfg: cfg, ob: ob, writer: cfg.Writer,
		log:   cfg.Logger.With("outbox", cfg.Outbox.Schema+"."+cfg.Outbox.Table),
		attrs: metric.WithAttributes(attribute.String("table", cfg.Outbox.Schema+"."+cfg.Outbox.Table))}
	if r.writer == nil {
		// Run builds its own writer, so that each Run can close it.
		r.ownW = true
		if err := checkWriter(NewWriter(cfg.Brokers...)); err != nil {
			return nil, err
		}
	} else if err := checkWriter(r.writer); err != nil {
		return nil, err
	}
	if cfg.TracerProvider != nil {
		r.tracer = cfg.TracerProvider.Tracer(instrumentation)
	}
	if err := r.initMetrics(); err != nil {
		return nil, fmt.Errorf("outbox: metrics: %w", err)
	}
	return r, nil
}

// ErrRunning is returned by Run when the Relay is already running.
var ErrRunning = errors.New("outbox: relay already running")

// Run publishes until ctx ends, then finishes in-flight rounds (within
// ShutdownTimeout) and returns nil. It returns an error at once when
// Postgres, the table or Kafka is unreachable at start (checked within
// StartupTimeout); later outages are retried with backoff and logged. A
// Relay runs once at a time: Run returns ErrRunning while another Run of it
// has not returned.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer r.running.Store(false)
	if ctx.Err() != nil {
		return nil
	}
	r.pubs = make([]publisher, r.cfg.Outbox.Shards)
	if r.ownW {
		transport, ownT := r.cfg.Transport, r.cfg.Transport == nil
		if ownT {
			transport = &kafka.Transport{}
		}
		for i := range r.pubs {
			w := NewWriter(r.cfg.Brokers...)
			w.Transport = transport
			r.pubs[i] = publisher{w: w, mu: &sync.Mutex{}}
		}
		r.writer = r.pubs[0].w // for the preflight probe
		defer func() {
			for _, p := range r.pubs {
				_ = p.w.Close()
			}
			if ownT {
				// Close leaves the transport's connections (and their
				// goroutines) open.
				transport.CloseIdleConnections()
			}
		}()
	} else {
		mu := &sync.Mutex{}
		for i := range r.pubs {
			r.pubs[i] = publisher{w: r.writer, mu: mu}
		}
	}
	if err := r.preflight(ctx); err != nil {
		return err
	}
	// work ends ShutdownTimeout after ctx, so a round in flight can finish.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(r.cfg.ShutdownTimeout, cancelWork)
		context.AfterFunc(work, func() { t.Stop() })
	})
	defer stop()

	wakes := make([]chan struct{}, r.cfg.Outbox.Shards)
	for i := range wakes {
		wakes[i] = make(chan struct{}, 1)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.listen(ctx, wakes)
	}()
	for shard := range r.cfg.Outbox.Shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.runShard(ctx, work, shard, wakes[shard])
		}()
	}
	if r.cfg.KeepPublished > 0 || r.cfg.DeadLetterRetention > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.prune(ctx)
		}()
	}
	r.log.Info("relay started", "shards", r.cfg.Outbox.Shards)
	wg.Wait()
	r.log.Info("relay stopped")
	return nil
}

// preflight fails fast, within StartupTimeout, on a configuration that
// cannot work: Postgres unreachable, the table missing or not migrated, no
// broker answering.
func (r *Relay) preflight(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.StartupTimeout)
	defer cancel()
	if err := r.pool.Ping(ctx); err != nil {
		return fmt.Errorf("outbox: Postgres unreachable: %w", err)
	}
	// The table, and the column of the newest migration (teams applying
	// `exactly migrate sql` with their own tool have no tracking rows).
	table := pgx.Identifier{r.cfg.Outbox.Schema, r.cfg.Outbox.Table}.Sanitize()
	var exists, current bool
	if err := r.pool.QueryRow(ctx, r.ob.sql.CheckTable, table).Scan(&exists, &current); err != nil {
		return fmt.Errorf("outbox: check table: %w", err)
	}
	if !exists {
		return fmt.Errorf("outbox: table %s does not exist; run outbox.Migrate or `exactly migrate up`", table)
	}
	if !current {
		return fmt.Errorf("outbox: table %s predates migration 002 (no rejections column); run outbox.Migrate or `exactly migrate up`", table)
	}
	if err := r.checkOutside(ctx); err != nil {
		return err
	}
	// Probe with the writer's own TLS and SASL settings.
	dialer := &kafka.Dialer{Timeout: r.cfg.StartupTimeout}
	if t, ok := r.writer.Transport.(*kafka.Transport); ok {
		dialer.TLS, dialer.SASLMechanism, dialer.DialFunc = t.TLS, t.SASL, t.Dial
	}
	if err := kafkaprobe.Reachable(ctx, dialer, splitAddr(r.writer.Addr)); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	return nil
}

// checkOutside logs an error when rows wait in shards this relay does not
// publish (0..Shards-1 are its shards): writers configured with more shards
// enqueued them, and they wait until a relay configured like those writers
// runs. It does not refuse to start: the rows of its own shards would wait
// too. MetricRowsOutsideShards keeps counting such rows while it runs.
func (r *Relay) checkOutside(ctx context.Context) error {
	rows, err := r.pool.Query(ctx, r.ob.sql.Outside, r.cfg.Outbox.Shards)
	if err != nil {
		return fmt.Errorf("outbox: check shards: %w", err)
	}
	var shard int
	var n, total int64
	var shards []int
	if _, err := pgx.ForEachRow(rows, []any{&shard, &n}, func() error {
		shards = append(shards, shard)
		total += n
		return nil
	}); err != nil {
		return fmt.Errorf("outbox: check shards: %w", err)
	}
	if total > 0 {
		r.log.Error("outbox rows in shards this relay does not publish: writers are configured with more shards than this relay's Outbox.Shards; run relays with the writers' Config.Shards",
			"rows", total, "in_shards", fmt.Sprint(shards), "relay_shards", r.cfg.Outbox.Shards)
	}
	return nil
}

func splitAddr(a interface{ String() string }) []string {
	var out []string
	start := 0
	s := a.String()
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}

// newBackoff is the retry policy of failed publishes and of the LISTEN
// connection: from RetryInitial to RetryMax, never giving up.
func (r *Relay) newBackoff() *backoff.ExponentialBackOff {
	return retry.NewBackoff(r.cfg.RetryInitial, r.cfg.RetryMax)
}
