package consumer

import (
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/kafkaprobe"
	"github.com/exactlyhq/exactly/internal/sqltmpl"
	"github.com/exactlyhq/exactly/migrate"
)

// Message is a Kafka message handed to a handler, with its token.
type Message struct {
	kafka.Message
	// Token is the message's idempotency token, already claimed (zero with
	// Config.AtLeastOnce).
	Token inbox.Token
	// Attempt counts handler invocations for this message, from 1.
	Attempt int

	store *inbox.Store // nil with Config.AtLeastOnce
	span  trace.Span   // the message's span, with Config.TracerProvider
}

// ErrNoInbox is returned by Message.SetResult with Config.AtLeastOnce, which
// claims no tokens to store results with.
var ErrNoInbox = errors.New("consumer: no inbox (Config.AtLeastOnce)")

// SetResult stores result with the message's token in tx, the transaction
// the handler was given, so that it commits with the message's effects. A
// later delivery of the same token hands it to Config.OnDuplicate: a
// request/reply handler uses it to send the same reply again.
func (m Message) SetResult(ctx context.Context, tx pgx.Tx, result []byte) error {
	if m.store == nil {
		return ErrNoInbox
	}
	return m.store.SetResult(ctx, tx, m.Token, result)
}

// DuplicateFunc is called for a delivery whose token an earlier delivery
// already applied, in the batch's transaction, with the result that delivery
// stored with Message.SetResult (nil if it stored none). See
// Config.OnDuplicate.
type DuplicateFunc func(ctx context.Context, tx pgx.Tx, m Message, stored []byte) error

// Handler applies one message's effects through tx, the transaction that
// claimed its token. It must do all its database work through tx and must not
// commit or roll it back.
type Handler interface {
	Handle(ctx context.Context, tx pgx.Tx, m Message) error
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, tx pgx.Tx, m Message) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, tx pgx.Tx, m Message) error { return f(ctx, tx, m) }

// BatchHandler applies the effects of all fresh messages of a batch at once,
// for handlers that write in bulk. Duplicates are already removed; msgs are
// in partition order.
type BatchHandler interface {
	HandleBatch(ctx context.Context, tx pgx.Tx, msgs []Message) error
}

// BatchHandlerFunc adapts a function to a BatchHandler.
type BatchHandlerFunc func(ctx context.Context, tx pgx.Tx, msgs []Message) error

// HandleBatch calls f.
func (f BatchHandlerFunc) HandleBatch(ctx context.Context, tx pgx.Tx, msgs []Message) error {
	return f(ctx, tx, msgs)
}

//go:embed migrations/*.sql
var migrationFS embed.FS

//go:embed sql/*.sql
var queryFS embed.FS

// Consumer runs a consumer group whose handlers apply each message's effects
// once. Create it with New or NewBatch, then call Run.
type Consumer struct {
	cfg     Config
	handle  func(ctx context.Context, tx pgx.Tx, msgs []Message) error
	inbox   *inbox.Store
	sql     queries
	log     *slog.Logger
	metrics *metrics
	tracer  *tracer // nil without Config.TracerProvider
	// alone is held by the one attempt of this member that runs while its
	// process's death is being counted (attempts.go).
	alone chan struct{}

	mu      sync.Mutex
	running bool
}

// New returns a Consumer that calls h once per fresh message.
func New(cfg Config, h Handler) (*Consumer, error) {
	if h == nil {
		return nil, errors.New("consumer: New: handler is nil")
	}
	return newConsumer(cfg, func(ctx context.Context, tx pgx.Tx, msgs []Message) error {
		for i, m := range msgs {
			ctx := ctx
			if m.span != nil {
				ctx = trace.ContextWithSpan(ctx, m.span)
			}
			if err := callSafely(func() error { return h.Handle(ctx, tx, m) }); err != nil {
				return &handlerError{index: i, err: err}
			}
		}
		return nil
	})
}

// NewBatch returns a Consumer that calls h once per batch with all its fresh
// messages. When h fails, the consumer finds the failing message by calling h
// with one message at a time, each under a savepoint.
func NewBatch(cfg Config, h BatchHandler) (*Consumer, error) {
	if h == nil {
		return nil, errors.New("consumer: NewBatch: handler is nil")
	}
	return newConsumer(cfg, func(ctx context.Context, tx pgx.Tx, msgs []Message) error {
		if err := callSafely(func() error { return h.HandleBatch(ctx, tx, msgs) }); err != nil {
			return &handlerError{index: -1, err: err}
		}
		return nil
	})
}

func newConsumer(cfg Config, handle func(context.Context, pgx.Tx, []Message) error) (*Consumer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	store, err := inbox.New(cfg.Pool, cfg.Inbox)
	if err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	var q queries
	if err := sqltmpl.Load(queryFS, "sql", cfg.deadLetterVars(), &q); err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	m, err := newMetrics(cfg.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("consumer: metrics: %w", err)
	}
	return &Consumer{
		cfg:     cfg,
		handle:  handle,
		inbox:   store,
		sql:     q,
		log:     cfg.Logger.With("group", cfg.GroupID),
		metrics: m,
		tracer:  newTracer(cfg.TracerProvider, cfg.GroupID),
		alone:   make(chan struct{}, 1),
	}, nil
}

func callSafely(fn func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return fn()
}

// Migrations returns the migrations of the consumer's tables: the inbox and
// the dead-letter table.
func Migrations(cfg Config) ([]migrate.Line, error) {
	cfg = cfg.withDefaults()
	in, err := inbox.Migrations(cfg.Inbox)
	if err != nil {
		return nil, err
	}
	dl, err := migrate.Load(migrationFS, "migrations", "consumer_dead_letters", cfg.Inbox.Schema, cfg.DeadLetterTable, cfg.deadLetterVars())
	if err != nil {
		return nil, err
	}
	return []migrate.Line{in, dl}, nil
}

// Migrate applies the migrations of the inbox and dead-letter tables that
// cfg names, and for a partitioned inbox creates the partitions of the
// coming periods (inbox.Store.CreatePartitions). It is safe to call from
// every process at start-up.
func Migrate(ctx context.Context, db exactly.DB, cfg Config) error {
	lines, err := Migrations(cfg)
	if err != nil {
		return err
	}
	if err := migrate.Up(ctx, db, lines...); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	if cfg.Inbox.Layout != inbox.LayoutPartitioned {
		return nil
	}
	store, err := inbox.New(db, cfg.Inbox)
	if err != nil {
		return err
	}
	_, err = store.CreatePartitions(ctx)
	return err
}

// ErrRunning is returned by Run when the Consumer is already running.
var ErrRunning = errors.New("consumer: already running")

// Run joins the group and processes messages until ctx ends, then finishes
// or rolls back in-flight batches (within Config.ShutdownTimeout), commits
// the offsets of what Postgres committed, leaves the group and returns nil.
//
// Before joining, Run checks that Postgres answers, that the tables exist
// and that a broker answers, and returns an error at once if not. After
// that, outages of Kafka or Postgres are retried with backoff and logged;
// Run does not return because of them.
func (c *Consumer) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return ErrRunning
	}
	c.running = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running = false
		c.mu.Unlock()
	}()

	if ctx.Err() != nil {
		return nil
	}
	if err := c.preflight(ctx); err != nil {
		return err
	}
	if !c.cfg.AtLeastOnce {
		reg, err := c.metrics.observeInbox(c.inbox, c.cfg.GroupID)
		if err != nil {
			return fmt.Errorf("consumer: metrics: %w", err)
		}
		defer reg.Unregister() //nolint:errcheck // only fails for a foreign registration
	}
	group, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                c.cfg.GroupID,
		Brokers:           c.cfg.Brokers,
		Dialer:            c.cfg.Dialer,
		Topics:            c.cfg.Topics,
		SessionTimeout:    c.cfg.SessionTimeout,
		HeartbeatInterval: c.cfg.HeartbeatInterval,
		RebalanceTimeout:  c.cfg.SessionTimeout,
		JoinGroupBackoff:  c.cfg.RetryInitial * 10,
		StartOffset:       c.cfg.StartOffset,
		// kafka-go logs every retry at error level; we log what matters.
		ErrorLogger: kafka.LoggerFunc(func(format string, args ...any) {
			c.log.Debug("kafka-go: " + fmt.Sprintf(format, args...))
		}),
	})
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	// Table maintenance (maintain.go) runs beside the group, until Run
	// returns.
	mctx, stopMaintenance := context.WithCancel(ctx)
	maintained := make(chan struct{})
	go func() {
		defer close(maintained)
		c.maintain(mctx)
	}()
	defer func() {
		stopMaintenance()
		<-maintained
	}()
	transport := newTransport(c.cfg.Dialer, c.cfg.Topics)
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(c.cfg.Brokers...), Transport: transport}
	c.log.Info("consumer started", "topics", c.cfg.Topics, "scope", c.cfg.Inbox.Scope)
	var siblings *sync.WaitGroup // the partitions of the current generation
	for {
		gen, err := group.Next(ctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			// The group retries by itself (after JoinGroupBackoff); Next
			// reports each failure.
			c.log.Warn("joining consumer group failed; retrying", "err", err)
			continue
		}
		var parts []string
		// kafka-go ends the generation as soon as one of its goroutines
		// returns. At shutdown a partition that finished its batch waits for
		// its siblings, so that they may finish theirs too.
		// Each generation's closures hold their own WaitGroup: kafka-go
		// runs a function started on an ended generation anyway, so a
		// closure must never reach a later generation's.
		gw := &sync.WaitGroup{}
		siblings = gw
		cm := newCommitter(gen.CommitOffsets, c.newBackoff(), c.log.With("generation", gen.ID), c.metrics.commitErrors, metric.WithAttributes(attribute.String("group", c.cfg.GroupID)))
		gen.Start(cm.run)
		// Partitions added to a topic, or a topic created late, are
		// consumed after the next check (watch.go), not at some unrelated
		// rebalance.
		gen.Start(func(genCtx context.Context) { c.watchPartitions(genCtx, client, c.log.With("generation", gen.ID)) })
		for topic, as := range gen.Assignments {
			for _, a := range as {
				parts = append(parts, fmt.Sprintf("%s/%d@%d", topic, a.ID, a.Offset))
				p := c.newPartition(gen, cm, transport, topic, a)
				gw.Add(1)
				gen.Start(func(genCtx context.Context) {
					p.run(ctx, genCtx)
					gw.Done()
					if ctx.Err() != nil {
						waitOrDone(genCtx, gw)
					}
				})
			}
		}
		c.log.Info("generation started", "generation", gen.ID, "member", gen.MemberID, "partitions", parts)
	}
	c.log.Info("consumer stopping: finishing in-flight batches", "timeout", c.cfg.ShutdownTimeout)
	// Closing the group ends the generation at once, which would cancel the
	// batches in flight: first let the partitions finish them (each gives up
	// ShutdownTimeout after ctx ended), then leave the group.
	if siblings != nil {
		wctx, cancel := context.WithTimeout(context.Background(), c.cfg.ShutdownTimeout+time.Second)
		waitOrDone(wctx, siblings)
		cancel()
	}
	_ = group.Close()
	c.log.Info("consumer stopped")
	return nil
}

// preflight fails fast on a configuration that cannot work: Postgres
// unreachable, tables not migrated, no broker answering.
func (c *Consumer) preflight(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.StartupTimeout)
	defer cancel()
	if err := c.cfg.Pool.Ping(ctx); err != nil {
		return fmt.Errorf("consumer: Postgres unreachable: %w", err)
	}
	inboxTable := pgx.Identifier{c.cfg.Inbox.Schema, c.inbox.Config().Table}.Sanitize()
	dlTable := pgx.Identifier{c.cfg.Inbox.Schema, c.cfg.DeadLetterTable}.Sanitize()
	attemptsTable := pgx.Identifier{c.cfg.Inbox.Schema, c.cfg.DeadLetterTable + "_attempts"}.Sanitize()
	var haveInbox, haveDL, haveAttempts bool
	if err := c.cfg.Pool.QueryRow(ctx, c.sql.CheckTables, inboxTable, dlTable, attemptsTable).Scan(&haveInbox, &haveDL, &haveAttempts); err != nil {
		return fmt.Errorf("consumer: check tables: %w", err)
	}
	if !haveInbox || !haveDL || !haveAttempts {
		return fmt.Errorf("consumer: tables %s, %s and %s must exist (found inbox=%v, dead letters=%v, attempts=%v); run consumer.Migrate or `exactly migrate up`",
			inboxTable, dlTable, attemptsTable, haveInbox, haveDL, haveAttempts)
	}
	if !c.cfg.AtLeastOnce {
		layout, err := inbox.DetectLayout(ctx, c.cfg.Pool, c.cfg.Inbox)
		if err != nil {
			return fmt.Errorf("consumer: %w", err)
		}
		if layout != c.inbox.Config().Layout {
			return fmt.Errorf("consumer: %w: %s is %s, Config.Inbox.Layout is %s", inbox.ErrLayout, inboxTable, layout, c.inbox.Config().Layout)
		}
	}
	if err := kafkaprobe.Reachable(ctx, c.cfg.Dialer, c.cfg.Brokers); err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	return nil
}

// newTransport returns the transport the partitions fetch with, dialing
// and authenticating as d does.
func newTransport(d *kafka.Dialer, topics []string) *kafka.Transport {
	dial := d.DialFunc
	if dial == nil {
		dial = (&net.Dialer{Timeout: d.Timeout, Deadline: d.Deadline, LocalAddr: d.LocalAddr, FallbackDelay: d.FallbackDelay, KeepAlive: d.KeepAlive}).DialContext
	}
	return &kafka.Transport{
		Dial:           dial,
		DialTimeout:    cmp.Or(d.Timeout, 10*time.Second),
		ClientID:       d.ClientID,
		TLS:            d.TLS,
		SASL:           d.SASLMechanism,
		MetadataTopics: topics,
	}
}

// waitOrDone waits for wg or ctx, whichever comes first. The goroutine it
// starts ends when wg does: every sibling calls Done when it returns.
func waitOrDone(ctx context.Context, wg *sync.WaitGroup) {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// queries are the statements rendered from sql/*.sql.
type queries struct {
	AttemptsClear    string `sql:"attempts_clear"`
	AttemptsRead     string `sql:"attempts_read"`
	AttemptsSettled  string `sql:"attempts_settled"`
	AttemptsStart    string `sql:"attempts_start"`
	AttemptsWindow   string `sql:"attempts_window"`
	Begin            string `sql:"begin"`
	CheckTables      string `sql:"check_tables"`
	DBNow            string `sql:"db_now"`
	DeadLetter       string `sql:"dead_letter"`
	DeadLettersPrune string `sql:"dead_letters_prune"`
}
