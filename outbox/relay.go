package outbox

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/internal/kafkaprobe"
	"github.com/exactlyhq/exactly/internal/testhook"
)

// Defaults of RelayConfig.
const (
	BatchSizeDefault       = 500
	PollIntervalDefault    = 500 * time.Millisecond
	LingerDefault          = 100 * time.Millisecond
	LingerPollDefault      = 2 * time.Millisecond
	MaxAttemptsDefault     = 10
	RetryInitialDefault    = 100 * time.Millisecond
	RetryMaxDefault        = 10 * time.Second
	LockIntervalDefault    = time.Second
	RoundTimeoutDefault    = time.Minute
	ShutdownTimeoutDefault = 10 * time.Second
	PruneIntervalDefault   = time.Minute
	PruneBatchSizeDefault  = 1000
)

// Reasons recorded with an outbox dead letter.
const (
	ReasonTooLarge     = "too_large"     // the broker or writer refuses its size
	ReasonUnknownTopic = "unknown_topic" // the topic does not exist or is invalid
	ReasonRejected     = "rejected"      // another error that retrying cannot fix
)

// RelayConfig configures a Relay.
type RelayConfig struct {
	// Outbox names the table and its shards; it must match the writers'.
	Outbox Config
	// Brokers are Kafka bootstrap addresses, used to build a NewWriter when
	// Writer is nil.
	Brokers []string
	// Writer publishes. It must be synchronous, wait for all in-sync
	// replicas, partition by key hash and flush within MaxBatchTimeout;
	// NewRelay refuses it otherwise. Defaults to NewWriter(Brokers...).
	// Give the relay a writer of its own: its writes must not share record
	// batches with other code's. Its shards share it one write at a time,
	// which costs throughput: prefer Brokers and Transport, with which the
	// relay builds one writer per shard. A write holds at most the writer's
	// BatchSize messages and BatchBytes bytes (so that each partition's
	// share is one record batch, accepted or refused whole); keep BatchBytes
	// at or below the topics' max.message.bytes, or every full write is
	// refused and the relay falls back to one row per write.
	Writer *kafka.Writer
	// Transport connects the writers the relay builds from Brokers (TLS,
	// SASL). Defaults to a plain kafka.Transport of the relay's own, closed
	// when Run returns; one given here is left open. Not with Writer.
	Transport *kafka.Transport
	// BatchSize is the most rows published per round per shard. A round
	// also reads no more rows than one write holds, the writer's BatchBytes
	// (kafka-go's 1 MiB by default), or a single row larger than that, so
	// a relay's memory for rows stays near Shards × BatchBytes whatever
	// their size. Defaults to 500.
	BatchSize int
	// PollInterval is how often an idle shard looks for rows without being
	// notified. Defaults to 500ms; notifications make it a fallback.
	PollInterval time.Duration
	// Linger is how long a shard keeps polling every LingerPoll after it
	// last found rows, to catch rows enqueued inside another writer's
	// NotifyWindow; while rows are held back by an older transaction it
	// polls every 10×LingerPoll. Default to 100ms and 2ms. Linger -1 turns
	// both off: the relay then only wakes on notifications and PollInterval,
	// like a plain polling relay.
	Linger, LingerPoll time.Duration
	// MaxAttempts is how often Kafka may reject a row for a reason retrying
	// may not fix (too large, unknown topic) before it moves to the
	// dead-letter table. The row's rejections column counts these; its
	// attempts column counts every failed publish. Failures while Kafka is
	// unreachable never count, so an outage dead-letters nothing, however
	// long it lasts. An unknown topic does count: a topic the brokers do not
	// know through MaxAttempts retries of its row (about 40s at the default
	// backoff) dead-letters the row; replay it once the topic exists
	// (`exactly outbox-dead-letters replay`). Defaults to 10.
	MaxAttempts int
	// RetryInitial and RetryMax bound the backoff after failed publishes.
	// Default to 100ms and 10s.
	RetryInitial, RetryMax time.Duration
	// RoundTimeout bounds one round of a shard: reading its rows,
	// publishing them, deleting them. Past it the round is abandoned, the
	// shard's connection closed and the shard retaken (rows published but
	// not deleted are published again; downstream inboxes skip them).
	// Twice it is the shard session's idle_session_timeout, so that the
	// server releases the shard's lock when the relay's connection died
	// without closing (a half-open TCP connection). Defaults to 1m.
	RoundTimeout time.Duration
	// LockInterval is how often a relay tries to take shards no relay owns,
	// which bounds how long a dead relay's shards stay unpublished.
	// Defaults to 1s.
	LockInterval time.Duration
	// KeepPublished keeps published rows (marked published_at) this long,
	// for audit, and prunes them in batches of PruneBatchSize every
	// PruneInterval. Defaults to 0: rows are deleted once acknowledged.
	KeepPublished time.Duration
	// PruneInterval and PruneBatchSize pace the pruning of kept rows.
	// Default to 1m and 1000.
	PruneInterval  time.Duration
	PruneBatchSize int
	// ShutdownTimeout bounds how long Run spends finishing in-flight rounds
	// after its context ends. Defaults to 10s.
	ShutdownTimeout time.Duration
	// Logger receives structured logs. Defaults to slog.Default().
	Logger *slog.Logger
	// MeterProvider receives metrics. Defaults to a no-op provider.
	MeterProvider metric.MeterProvider
}

func (c RelayConfig) withDefaults() RelayConfig {
	c.Outbox = c.Outbox.withDefaults()
	c.BatchSize = cmp.Or(c.BatchSize, BatchSizeDefault)
	c.PollInterval = cmp.Or(c.PollInterval, PollIntervalDefault)
	c.Linger = cmp.Or(c.Linger, LingerDefault)
	c.LingerPoll = cmp.Or(c.LingerPoll, LingerPollDefault)
	c.MaxAttempts = cmp.Or(c.MaxAttempts, MaxAttemptsDefault)
	c.RetryInitial = cmp.Or(c.RetryInitial, RetryInitialDefault)
	c.RetryMax = cmp.Or(c.RetryMax, RetryMaxDefault)
	c.LockInterval = cmp.Or(c.LockInterval, LockIntervalDefault)
	c.RoundTimeout = cmp.Or(c.RoundTimeout, RoundTimeoutDefault)
	c.PruneInterval = cmp.Or(c.PruneInterval, PruneIntervalDefault)
	c.PruneBatchSize = cmp.Or(c.PruneBatchSize, PruneBatchSizeDefault)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, ShutdownTimeoutDefault)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MeterProvider == nil {
		c.MeterProvider = noop.NewMeterProvider()
	}
	return c
}

func (c RelayConfig) validate() error {
	if err := c.Outbox.validate(); err != nil {
		return err
	}
	var errs []error
	if c.Writer == nil && len(c.Brokers) == 0 {
		errs = append(errs, errors.New("outbox: RelayConfig.Brokers: required when Writer is nil"))
	}
	if c.Writer != nil && c.Transport != nil {
		errs = append(errs, errors.New("outbox: RelayConfig.Transport: set it on the Writer instead (Transport is for the writers the relay builds from Brokers)"))
	}
	if c.BatchSize < 1 || c.BatchSize > MaxEnqueue {
		errs = append(errs, fmt.Errorf("outbox: RelayConfig.BatchSize: %d is not in 1..%d", c.BatchSize, MaxEnqueue))
	}
	if c.MaxAttempts < 1 {
		errs = append(errs, fmt.Errorf("outbox: RelayConfig.MaxAttempts: must be at least 1, got %d", c.MaxAttempts))
	}
	if c.Linger < -1 {
		errs = append(errs, fmt.Errorf("outbox: RelayConfig.Linger: %v; use -1 to turn lingering off", c.Linger))
	}
	for name, d := range map[string]time.Duration{"PollInterval": c.PollInterval, "LingerPoll": c.LingerPoll,
		"RetryInitial": c.RetryInitial, "RetryMax": c.RetryMax, "LockInterval": c.LockInterval, "KeepPublished": c.KeepPublished,
		"PruneInterval": c.PruneInterval, "ShutdownTimeout": c.ShutdownTimeout} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("outbox: RelayConfig.%s: negative duration %v", name, d))
		}
	}
	if c.RetryMax < c.RetryInitial {
		errs = append(errs, fmt.Errorf("outbox: RelayConfig.RetryMax: %v is less than RetryInitial %v", c.RetryMax, c.RetryInitial))
	}
	if c.PruneBatchSize < 1 {
		errs = append(errs, fmt.Errorf("outbox: RelayConfig.PruneBatchSize: must be positive, got %d", c.PruneBatchSize))
	}
	return errors.Join(errs...)
}

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

	running atomic.Bool
	pubs    []publisher // by shard, set by Run
}

// publisher writes one shard's messages, each write alone in its record
// batches: kafka-go batches concurrent writes to a partition together, and a
// write that shares a batch with another, or is split over two, can fail in
// part (see write). A relay that builds its writers gives each shard one;
// a writer from RelayConfig.Writer is shared by all shards, one write at a
// time.
type publisher struct {
	w  *kafka.Writer
	mu *sync.Mutex
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
	if err := r.initMetrics(); err != nil {
		return nil, fmt.Errorf("outbox: metrics: %w", err)
	}
	return r, nil
}

// Metric names, each with the attribute "table".
const (
	MetricPublished    = "exactly.outbox.published"
	MetricFailures     = "exactly.outbox.publish_failures"
	MetricDeadLettered = "exactly.outbox.dead_lettered"
	MetricLatency      = "exactly.outbox.latency"
	MetricOwnedShards  = "exactly.outbox.owned_shards"
	MetricBacklog      = "exactly.outbox.backlog"
	MetricOldestAge    = "exactly.outbox.oldest_age"
	MetricShardOwned   = "exactly.outbox.shard_owned"

	MetricRowsOutsideShards = "exactly.outbox.rows_outside_shards"
)

// latencyBuckets are the bounds, in seconds, of the publish latency
// histogram: from a millisecond to a minute.
var latencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

func (r *Relay) initMetrics() error {
	m := r.cfg.MeterProvider.Meter("github.com/exactlyhq/exactly/outbox")
	var err error
	if r.published, err = m.Int64Counter(MetricPublished, metric.WithDescription("Rows published and acknowledged.")); err != nil {
		return err
	}
	if r.failures, err = m.Int64Counter(MetricFailures, metric.WithDescription("Rows whose publish failed, by class (transient, permanent).")); err != nil {
		return err
	}
	if r.dead, err = m.Int64Counter(MetricDeadLettered, metric.WithDescription("Rows moved to the dead-letter table.")); err != nil {
		return err
	}
	if r.latency, err = m.Float64Histogram(MetricLatency, metric.WithUnit("s"), metric.WithDescription("Time from enqueue to Kafka acknowledgement."),
		metric.WithExplicitBucketBoundaries(latencyBuckets...)); err != nil {
		return err
	}
	_, err = m.Int64ObservableGauge(MetricOwnedShards, metric.WithDescription("Shards this relay owns."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(r.owned.Load(), r.attrs)
			return nil
		}))
	if err != nil {
		return err
	}
	// The table-wide view (every relay reports it; alert on max or any):
	// backlog, age of the oldest row and whether any relay owns each shard.
	backlog, err := m.Int64ObservableGauge(MetricBacklog, metric.WithDescription("Rows waiting to be published, by shard."))
	if err != nil {
		return err
	}
	oldest, err := m.Float64ObservableGauge(MetricOldestAge, metric.WithUnit("s"), metric.WithDescription("Age of the oldest row waiting to be published, by shard (0 when empty)."))
	if err != nil {
		return err
	}
	ownedBy, err := m.Int64ObservableGauge(MetricShardOwned, metric.WithDescription("1 when some relay holds the shard's lock, 0 when no relay does."))
	if err != nil {
		return err
	}
	outside, err := m.Int64ObservableGauge(MetricRowsOutsideShards, metric.WithDescription(
		"Rows waiting in shards outside 0..Shards-1 of this relay's configuration: enqueued by writers configured with more shards, published by no relay configured like this one."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		shards, err := Shards(ctx, r.pool, r.cfg.Outbox)
		if err != nil {
			return err
		}
		now := time.Now()
		var stray int64
		for _, s := range shards {
			attrs := metric.WithAttributes(attribute.String("table", r.cfg.Outbox.Schema+"."+r.cfg.Outbox.Table), attribute.Int("shard", s.Shard))
			// A shard outside the relay's shards that holds rows is
			// reported like its own: its rows wait in the backlog, and
			// unless a relay configured with more shards owns it, it has
			// no relay.
			o.ObserveInt64(backlog, s.Backlog, attrs)
			age := 0.0
			if !s.Oldest.IsZero() {
				age = now.Sub(s.Oldest).Seconds()
			}
			o.ObserveFloat64(oldest, age, attrs)
			if s.Outside {
				stray += s.Backlog
			}
			owned := int64(0)
			if s.Owned {
				owned = 1
			}
			o.ObserveInt64(ownedBy, owned, attrs)
		}
		o.ObserveInt64(outside, stray, r.attrs)
		return nil
	}, backlog, oldest, ownedBy, outside)
	return err
}

// Run publishes until ctx ends, then finishes in-flight rounds (within
// ShutdownTimeout) and returns nil. It returns an error at once when
// Postgres, the table or Kafka is unreachable at start; later outages are
// retried with backoff and logged.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("outbox: relay already running")
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
	if r.cfg.KeepPublished > 0 {
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

func (r *Relay) preflight(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
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
	dialer := &kafka.Dialer{Timeout: 10 * time.Second}
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

// listen wakes every shard on each notification, on a connection of its
// own, re-established after loss. A reconnect wakes every shard too:
// notifications sent while it was down are lost.
func (r *Relay) listen(ctx context.Context, wakes []chan struct{}) {
	wakeAll := func() {
		for _, w := range wakes {
			select {
			case w <- struct{}{}:
			default:
			}
		}
	}
	bo := r.newBackoff()
	for ctx.Err() == nil {
		err := r.listenOnce(ctx, wakeAll, bo)
		if ctx.Err() != nil {
			return
		}
		wait := bo.NextBackOff()
		r.log.Warn("LISTEN connection lost; polling until it is back", "err", err, "backoff", wait)
		if !sleep(ctx, wait) {
			return
		}
	}
}

func (r *Relay) listenOnce(ctx context.Context, wakeAll func(), bo backoff.BackOff) error {
	testhook.Run("outbox.before-listen")
	conn, err := pgx.ConnectConfig(ctx, r.pool.Config().ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{r.cfg.Outbox.Channel()}.Sanitize()); err != nil {
		return err
	}
	bo.Reset()
	wakeAll()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		wakeAll()
	}
}

func (r *Relay) newBackoff() *backoff.ExponentialBackOff {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = r.cfg.RetryInitial
	bo.MaxInterval = r.cfg.RetryMax
	bo.MaxElapsedTime = 0 // outages are waited out, never given up on
	bo.Reset()
	return bo
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// runShard owns the shard whenever no other relay does and publishes it.
func (r *Relay) runShard(ctx, work context.Context, shard int, wake <-chan struct{}) {
	log := r.log.With("shard", shard)
	// Spread the first lock attempts of relays started together.
	if !sleep(ctx, time.Duration(rand.Int64N(int64(r.cfg.LockInterval)/4+1))) {
		return
	}
	for ctx.Err() == nil {
		conn, err := r.own(ctx, shard)
		if err != nil {
			log.Warn("cannot try the shard lock", "err", err)
		}
		if conn == nil {
			if !sleep(ctx, r.cfg.LockInterval) {
				return
			}
			continue
		}
		r.owned.Add(1)
		log.Info("shard owned")
		err = r.publishShard(ctx, work, conn, shard, wake, log)
		r.owned.Add(-1)
		// Closing the session releases the advisory lock.
		_ = conn.Close(context.WithoutCancel(ctx))
		if ctx.Err() != nil {
			return
		}
		log.Warn("shard released after an error; retaking it", "err", err)
		if !sleep(ctx, r.cfg.RetryInitial) {
			return
		}
	}
}

// own returns a connection holding the shard's advisory lock, or nil when
// another relay owns the shard.
func (r *Relay) own(ctx context.Context, shard int) (*pgx.Conn, error) {
	c, err := r.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	var got bool
	key := lockKeyPrefix(r.cfg.Outbox) + strconv.Itoa(shard)
	if err := c.QueryRow(ctx, r.ob.sql.LockShard, key).Scan(&got); err != nil {
		c.Release()
		return nil, err
	}
	if !got {
		c.Release()
		return nil, nil
	}
	// The lock lives as long as the session: take the connection out of
	// the pool so that nobody else uses (or resets) it.
	conn := c.Hijack()
	idle := strconv.FormatInt(max(2*r.cfg.RoundTimeout, r.cfg.RetryMax+r.cfg.PollInterval+r.cfg.RoundTimeout).Milliseconds(), 10)
	if _, err := conn.Exec(ctx, r.ob.sql.SessionTimeout, idle); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42704" { // 42704: before Postgres 14
			_ = conn.Close(context.WithoutCancel(ctx))
			return nil, err
		}
	}
	return conn, nil
}

// lockKeyPrefix is the text whose hash, with the shard number appended,
// is the shard's advisory lock key.
func lockKeyPrefix(c Config) string { return "exactly.outbox:" + c.Schema + "." + c.Table + ":" }

// ShardStatus describes one shard of an outbox table.
type ShardStatus struct {
	Shard int
	// Backlog is the number of rows waiting to be published.
	Backlog int64
	// Oldest is when the oldest waiting row was enqueued; zero without one.
	Oldest time.Time
	// Owned is whether a relay holds the shard's lock.
	Owned bool
	// Outside is whether the shard is outside 0..Config.Shards-1: its rows
	// were enqueued by writers configured with more shards, and no relay
	// configured with Config.Shards reads them.
	Outside bool
}

// Shards reports the backlog and owner of every shard of the table cfg
// names, 0 to cfg.Shards-1, in order, followed by any other shard holding
// waiting rows (Outside: written by writers configured with more shards, and
// published by no relay configured with cfg). It counts the waiting rows:
// meant for operators and alerts.
func Shards(ctx context.Context, db interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, cfg Config) ([]ShardStatus, error) {
	ob, err := New(cfg)
	if err != nil {
		return nil, err
	}
	cfg = ob.cfg
	rows, err := db.Query(ctx, ob.sql.Shards, cfg.Shards, lockKeyPrefix(cfg))
	if err != nil {
		return nil, fmt.Errorf("outbox: shards: %w", err)
	}
	var out []ShardStatus
	var st ShardStatus
	var oldest *time.Time
	_, err = pgx.ForEachRow(rows, []any{&st.Shard, &st.Backlog, &oldest, &st.Owned, &st.Outside}, func() error {
		st.Oldest = time.Time{}
		if oldest != nil {
			st.Oldest = *oldest
		}
		out = append(out, st)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: shards: %w", err)
	}
	return out, nil
}

// row is one outbox row being published.
type row struct {
	id        int64
	messageID string
	topic     string
	key       []byte
	value     []byte
	headers   []byte
	createdAt time.Time
}

// blockedKey is a key whose oldest row failed for a reason that retrying
// may not fix. Its later rows wait; the row is retried alone, after wait.
type blockedKey struct {
	id      int64
	wait    time.Duration
	retryAt time.Time
}

func (r *Relay) publishShard(ctx, work context.Context, conn *pgx.Conn, shard int, wake <-chan struct{}, log *slog.Logger) error {
	bo := r.newBackoff()
	blocked := map[string]*blockedKey{}
	var lingerUntil time.Time
	for ctx.Err() == nil {
		if err := r.round(ctx, work, conn, shard, wake, log, bo, blocked, &lingerUntil); err != nil {
			return err
		}
	}
	return nil
}

// round reads a shard's pending rows, publishes and deletes them, or waits
// for some, under RoundTimeout: on a connection whose peer vanished without
// closing it, a statement would otherwise wait for the operating system's
// TCP timers, minutes to hours, with the shard stalled.
func (r *Relay) round(ctx, work context.Context, conn *pgx.Conn, shard int, wake <-chan struct{}, log *slog.Logger, bo *backoff.ExponentialBackOff, blocked map[string]*blockedKey, lingerUntil *time.Time) error {
	work, cancel := context.WithTimeout(work, r.cfg.RoundTimeout)
	defer cancel()
	{
		next, err := r.retryBlocked(work, conn, r.pubs[shard], blocked, log)
		if err != nil {
			return err
		}
		keys := make([][]byte, 0, len(blocked))
		for k := range blocked {
			keys = append(keys, []byte(k))
		}
		rows, err := r.fetchPending(work, conn, r.pubs[shard], shard, keys)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			wait := r.cfg.PollInterval
			if time.Now().Before(*lingerUntil) {
				wait = r.cfg.LingerPoll
			} else if r.cfg.Linger > 0 {
				// Rows held back by an older transaction still running
				// get no notification when it ends: keep polling, at ten
				// times LingerPoll (a long transaction could hold them for
				// minutes).
				var held bool
				if err := conn.QueryRow(work, r.ob.sql.HeldBack, shard, keys).Scan(&held); err != nil {
					return fmt.Errorf("read outbox: %w", err)
				}
				if held {
					wait = min(r.cfg.PollInterval, 10*r.cfg.LingerPoll)
				}
			}
			if !next.IsZero() {
				wait = min(wait, time.Until(next))
			}
			t := time.NewTimer(max(wait, 0))
			select {
			case <-ctx.Done():
			case <-wake:
			case <-t.C:
			}
			t.Stop()
			return nil
		}
		if r.cfg.Linger > 0 {
			*lingerUntil = time.Now().Add(r.cfg.Linger)
		}
		transient, err := r.publishRows(work, conn, r.pubs[shard], rows, blocked, log)
		if err != nil {
			return err
		}
		if transient != nil {
			wait := bo.NextBackOff()
			log.Warn("publish failed; rows stay in the outbox", "rows", len(rows), "backoff", wait, "err", transient)
			if !sleep(ctx, wait) {
				return nil
			}
			return nil
		}
		bo.Reset()
	}
	return nil
}

// retryBlocked publishes the head row of each blocked key whose retry is
// due, alone, and returns when the next retry is due.
func (r *Relay) retryBlocked(ctx context.Context, conn *pgx.Conn, pub publisher, blocked map[string]*blockedKey, log *slog.Logger) (time.Time, error) {
	var next time.Time
	now := time.Now()
	for k, b := range blocked {
		if b.retryAt.After(now) {
			if next.IsZero() || b.retryAt.Before(next) {
				next = b.retryAt
			}
			continue
		}
		rows, err := r.fetch(ctx, conn, r.ob.sql.FetchIDs, []int64{b.id})
		if err != nil {
			return next, err
		}
		if len(rows) == 0 { // published or dead-lettered by another relay
			delete(blocked, k)
			continue
		}
		if _, err := r.publishRows(ctx, conn, pub, rows, blocked, log); err != nil {
			return next, err
		}
		if nb, ok := blocked[k]; ok && (next.IsZero() || nb.retryAt.Before(next)) {
			next = nb.retryAt
		}
	}
	return next, nil
}

// fetchPending reads the next rows of the shard to publish through pub,
// leaving out the keys in blocked: at most BatchSize rows and no more bytes
// than one write of pub holds (or one row larger than that), so that a
// backlog of large rows costs the relay one write's worth of memory per
// shard, not BatchSize rows.
//
// fetch.sql sums, in id order, each row's key and value lengths, its
// headers' size and rowOverhead, never less than fit counts the row, and
// keeps the rows up to the writer's BatchBytes. Lengths come from the
// datums' headers (TOAST pointers too), so rows left out are not read
// whole. Stored jsonb is never smaller than the header bytes it holds, but
// compressed jsonb can be: that is measured as text. Sizes are int4, whose
// sum is int8 (a sum of int8 is numeric, much slower). Keep the query under
// track_activity_query_size (1kB): pg_stat_activity shows no more of it.
func (r *Relay) fetchPending(ctx context.Context, conn *pgx.Conn, pub publisher, shard int, blocked [][]byte) ([]row, error) {
	_, maxBytes := pub.limits()
	return r.fetch(ctx, conn, r.ob.sql.Fetch, shard, r.cfg.BatchSize, blocked, maxBytes, rowOverhead)
}

// rowOverhead is what fetch.sql adds to a row's key, value and headers: the
// per-message bytes fit counts and the message id header the relay adds.
const rowOverhead = 32 + 10 + len(exactly.Header) + 36

func (r *Relay) fetch(ctx context.Context, conn *pgx.Conn, query string, args ...any) ([]row, error) {
	rows, err := conn.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	var out []row
	var x row
	_, err = pgx.ForEachRow(rows, []any{&x.id, &x.messageID, &x.topic, &x.key, &x.value, &x.headers, &x.createdAt}, func() error {
		out = append(out, x)
		x = row{}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return out, nil
}

// publishRows publishes rows in one write and settles each in the database:
// acknowledged rows are removed (or marked), failed rows record the failure.
// It returns the error of a transient failure, after which the caller backs
// off, and an error only when the database could not record the outcome.
func (r *Relay) publishRows(ctx context.Context, conn *pgx.Conn, pub publisher, rows []row, blocked map[string]*blockedKey, log *slog.Logger) (transient, err error) {
	msgs, err := kafkaMessages(rows)
	if err != nil {
		return nil, err
	}
	if n := pub.fit(msgs); n < len(msgs) {
		rows, msgs = rows[:n], msgs[:n] // the rest are fetched again next round
	}
	errs := pub.write(ctx, msgs)
	// Settle failures in id order (rows come sorted by id). A row whose key
	// has an earlier row failing in this write keeps its error without
	// counting a rejection: it failed for sharing that row's write, and
	// publishing it now would overtake that row. Kafka rejects a partition's
	// whole record batch for one record too large, and kafka-go fails a
	// write's other messages with an unknown topic's error, so a rejected row
	// that is first of its key is published again alone, once: only the
	// culprit counts a rejection and blocks its key.
	behind := make([]bool, len(rows))
	failedKey := map[string]bool{}
	for i, x := range rows {
		k := string(x.key)
		if errs[i] == nil {
			continue
		}
		if failedKey[k] {
			behind[i] = true
			continue
		}
		if len(rows) > 1 && permanentReason(errs[i]) != "" {
			errs[i] = pub.write(ctx, msgs[i:i+1])[0]
		}
		failedKey[k] = errs[i] != nil
	}

	var okIDs, failIDs []int64
	var failTexts []string
	var rejected []bool
	now := time.Now()
	for i, x := range rows {
		if errs[i] == nil {
			okIDs = append(okIDs, x.id)
			r.latency.Record(ctx, now.Sub(x.createdAt).Seconds(), r.attrs)
		} else {
			failIDs = append(failIDs, x.id)
			failTexts = append(failTexts, errs[i].Error())
			rejected = append(rejected, !behind[i] && permanentReason(errs[i]) != "")
		}
	}
	if len(okIDs) > 0 {
		testhook.Run("outbox.after-publish")
		q := r.ob.sql.Delete
		if r.cfg.KeepPublished > 0 {
			q = r.ob.sql.MarkPublished
		}
		if _, err := conn.Exec(ctx, q, okIDs); err != nil {
			return nil, fmt.Errorf("remove %d published rows (they will be published again): %w", len(okIDs), err)
		}
		r.published.Add(ctx, int64(len(okIDs)), r.attrs)
		for i, x := range rows {
			if errs[i] == nil {
				if b, ok := blocked[string(x.key)]; ok && b.id == x.id {
					delete(blocked, string(x.key))
				}
			}
		}
	}
	if len(failIDs) == 0 {
		return nil, nil
	}
	rejections := map[int64]int{}
	res, err := conn.Query(ctx, r.ob.sql.RecordFailure, failIDs, failTexts, rejected)
	if err != nil {
		return nil, fmt.Errorf("record failures: %w", err)
	}
	var id int64
	var n int
	if _, err := pgx.ForEachRow(res, []any{&id, &n}, func() error { rejections[id] = n; return nil }); err != nil {
		return nil, fmt.Errorf("record failures: %w", err)
	}
	for i, x := range rows {
		e := errs[i]
		if e == nil || behind[i] {
			continue // published, or waiting behind its key's failing row
		}
		k := string(x.key)
		b, isHead := blocked[k]
		isHead = isHead && b.id == x.id
		reason := permanentReason(e)
		if reason == "" {
			r.failures.Add(ctx, 1, r.attrs, metric.WithAttributes(attribute.String("class", "transient")))
			transient = e
			if isHead { // retried alone: back off like the shard does
				b.wait = min(r.cfg.RetryMax, 2*b.wait)
				b.retryAt = time.Now().Add(b.wait)
			}
			continue
		}
		r.failures.Add(ctx, 1, r.attrs, metric.WithAttributes(attribute.String("class", "permanent")))
		if rejections[x.id] >= r.cfg.MaxAttempts {
			if _, err := conn.Exec(ctx, r.ob.sql.DeadLetter, x.id, reason, e.Error()); err != nil {
				return nil, fmt.Errorf("dead-letter row %d: %w", x.id, err)
			}
			r.dead.Add(ctx, 1, r.attrs)
			log.Warn("outbox row dead-lettered", "id", x.id, "message_id", x.messageID, "topic", x.topic, "reason", reason, "rejections", rejections[x.id], "err", e)
			if isHead {
				delete(blocked, k)
			}
			continue
		}
		wait := min(r.cfg.RetryMax, r.cfg.RetryInitial<<min(rejections[x.id], 20))
		blocked[k] = &blockedKey{id: x.id, wait: wait, retryAt: time.Now().Add(wait)}
		log.Warn("outbox row rejected; its key waits while it is retried", "id", x.id, "topic", x.topic, "rejections", rejections[x.id], "max_attempts", r.cfg.MaxAttempts, "retry_in", wait, "err", e)
	}
	return transient, nil
}

// kafkaMessages returns the messages to publish for rows, each with its
// message id header.
func kafkaMessages(rows []row) ([]kafka.Message, error) {
	msgs := make([]kafka.Message, len(rows))
	for i, x := range rows {
		var hs []header
		if err := json.Unmarshal(x.headers, &hs); err != nil {
			return nil, fmt.Errorf("row %d: headers: %w", x.id, err)
		}
		kh := make([]kafka.Header, 0, len(hs)+1)
		hasID := false
		for _, h := range hs {
			kh = append(kh, kafka.Header{Key: h.Key, Value: h.Value})
			hasID = hasID || strings.EqualFold(h.Key, exactly.Header)
		}
		if !hasID {
			kh = append(kh, kafka.Header{Key: exactly.Header, Value: []byte(x.messageID)})
		}
		msgs[i] = kafka.Message{Topic: x.topic, Key: x.key, Value: x.value, Headers: kh}
	}
	return msgs, nil
}

// fit returns how many of msgs, from the first, one write may hold: kafka-go
// sends a partition's messages of one write as one record batch only up to
// the writer's BatchSize messages and BatchBytes bytes, and splits beyond.
// The parts of a split write succeed or fail on their own, so a key's later
// row could be published while its earlier row failed. For the same reason a
// write ends before a key's row for another topic than the key's earlier
// rows in it (each topic's partition is a batch of its own). The first
// message always fits (one too large for the writer is rejected on its own).
func (p publisher) fit(msgs []kafka.Message) int {
	maxMsgs, maxBytes := p.limits()
	var n int
	var bytes int64
	var topicOf map[string]string // key -> topic of its rows so far, once a write has two topics
	for ; n < len(msgs); n++ {
		m := &msgs[n]
		size := int64(32 + len(m.Key) + len(m.Value)) // at least kafka-go's estimate
		for _, h := range m.Headers {
			size += int64(10 + len(h.Key) + len(h.Value))
		}
		if n > 0 && (n >= maxMsgs || bytes+size > maxBytes) {
			break
		}
		if topicOf == nil && m.Topic != msgs[0].Topic {
			topicOf = make(map[string]string, n)
			for _, p := range msgs[:n] {
				topicOf[string(p.Key)] = p.Topic
			}
		}
		if topicOf != nil {
			if t, seen := topicOf[string(m.Key)]; seen && t != m.Topic {
				break
			}
			topicOf[string(m.Key)] = m.Topic
		}
		bytes += size
	}
	return n
}

// limits returns the most messages and bytes kafka-go puts in one record
// batch: the writer's BatchSize and BatchBytes, or kafka-go's defaults.
func (p publisher) limits() (maxMsgs int, maxBytes int64) {
	maxMsgs, maxBytes = p.w.BatchSize, p.w.BatchBytes
	if maxMsgs <= 0 {
		maxMsgs = 100 // kafka-go's defaults
	}
	if maxBytes <= 0 {
		maxBytes = 1 << 20
	}
	return maxMsgs, maxBytes
}

// write publishes msgs in one call and returns each message's error. One
// write at a time per writer: kafka-go would otherwise put messages of
// concurrent writes (of other shards) into the same record batch, where a
// rejected message fails the others, or push a write's messages into a
// second batch, which can fail while the first succeeds.
func (p publisher) write(ctx context.Context, msgs []kafka.Message) []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	errs := make([]error, len(msgs))
	werr := p.w.WriteMessages(ctx, msgs...)
	var we kafka.WriteErrors
	switch {
	case werr == nil:
	case errors.As(werr, &we) && len(we) == len(msgs):
		copy(errs, we)
	default:
		for i := range errs {
			errs[i] = werr
		}
	}
	return errs
}

// permanentReason classifies a publish error that retrying will not fix,
// or returns "" for one that it may (an unreachable broker, a leader
// election, a timeout).
func permanentReason(err error) string {
	var tooLarge kafka.MessageTooLargeError
	if errors.As(err, &tooLarge) {
		return ReasonTooLarge
	}
	var kerr kafka.Error
	if errors.As(err, &kerr) {
		switch kerr {
		case kafka.MessageSizeTooLarge, kafka.RecordListTooLarge:
			return ReasonTooLarge
		case kafka.UnknownTopicOrPartition, kafka.InvalidTopic, kafka.TopicAuthorizationFailed:
			return ReasonUnknownTopic
		case kafka.InvalidRecord, kafka.UnsupportedForMessageFormat:
			return ReasonRejected
		}
	}
	return ""
}

// prune deletes published rows older than KeepPublished in bounded batches.
func (r *Relay) prune(ctx context.Context) {
	t := time.NewTicker(r.cfg.PruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := r.PrunePublished(ctx, time.Now().Add(-r.cfg.KeepPublished))
		if err != nil && ctx.Err() == nil {
			r.log.Warn("pruning published rows failed", "err", err)
		} else if n > 0 {
			r.log.Debug("pruned published rows", "rows", n)
		}
	}
}

// PrunePublished deletes rows published before before, PruneBatchSize per
// statement, and returns how many it deleted.
func (r *Relay) PrunePublished(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for {
		tag, err := r.pool.Exec(ctx, r.ob.sql.PrunePublished, before, r.cfg.PruneBatchSize)
		if err != nil {
			return total, fmt.Errorf("outbox: prune: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(r.cfg.PruneBatchSize) {
			return total, nil
		}
	}
}
