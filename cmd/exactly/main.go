// Command exactly inspects and operates the tables of the exactly framework:
// migrations, status, dead letters and retention.
//
//	exactly migrate up|down|status|sql
//	exactly status [-brokers host:port] [-group G]...
//	exactly dead-letters list|show|replay|discard
//	exactly outbox-dead-letters list|show|replay|discard
//	exactly prune -older-than 30d [-scope S] [-dry-run] [-force]
//	exactly version
//	exactly help [COMMAND]
//
// "exactly help COMMAND" and "exactly COMMAND -h" describe a command, its
// arguments and the flags it takes. Commands that read the database take
// -dsn (default $DATABASE_URL), -schema and the names of the tables they
// read; "migrate sql" reads none. -json prints output meant for scripts, and
// errors as {"error": "...", "code": N} on stderr. Exit status: 0 success, 1
// failure, 2 bad usage, 3 the database was never migrated, 4 not found.
package main

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/deadletter"
	"github.com/exactlyhq/exactly/internal/sqltmpl"
	"github.com/exactlyhq/exactly/migrate"
	"github.com/exactlyhq/exactly/outbox"
)

// Exit statuses.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitNotMigrated = 3
	exitNotFound    = 4
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// usageError is a mistake in the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// notMigrated reports tables that do not exist.
type notMigrated struct{ tables []string }

func (e notMigrated) Error() string {
	return fmt.Sprintf("database not migrated: %s missing; run `exactly migrate up`", strings.Join(e.tables, ", "))
}

// errNotFound is what commands that find nothing return (exit status 4).
var errNotFound = deadletter.ErrNotFound

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	s := &session{stdout: stdout, stderr: stderr, json: wantsJSON(args)}
	if len(args) == 0 {
		s.stdout = stderr
		s.overview()
		return exitUsage
	}
	err := s.dispatch(ctx, args)
	code := exitCode(err)
	if code != exitOK {
		s.report(err, code)
	}
	return code
}

// exitCode is the exit status documented for err.
func exitCode(err error) int {
	var ue usageError
	var nm notMigrated
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &nm):
		return exitNotMigrated
	case errors.Is(err, errNotFound):
		return exitNotFound
	default:
		return exitFailure
	}
}

// env holds the flags every command shares and the connection.
type env struct {
	uses                                              shared // the shared flags the command takes
	dsn, schema, inboxTable, deadLetters, outboxTable string
	layout                                            string // -inbox-layout; "" until connect finds the table's
	shards                                            int
	json                                              bool
	args                                              []string // positional arguments
	stdout                                            io.Writer
	pool                                              *pgxpool.Pool
	sql                                               queries
	dl                                                *deadletter.Store
}

func (e *env) inboxConfig() inbox.Config {
	return inbox.Config{Schema: e.schema, Table: e.inboxTable, Layout: inbox.Layout(e.layout)}
}

func (e *env) consumerConfig() consumer.Config {
	return consumer.Config{Inbox: e.inboxConfig(), DeadLetterTable: e.deadLetters}
}

func (e *env) outboxConfig() outbox.Config {
	return outbox.Config{Schema: e.schema, Table: e.outboxTable, Shards: e.shards}
}

// lines are the migrations of every table, in the order they apply.
func (e *env) lines() ([]migrate.Line, error) {
	cl, err := consumer.Migrations(e.consumerConfig())
	if err != nil {
		return nil, err
	}
	ol, err := outbox.Migrations(e.outboxConfig())
	if err != nil {
		return nil, err
	}
	return append(cl, ol), nil
}

//go:embed sql/*.sql
var queryFS embed.FS

// connect opens the pool and renders the queries.
func (e *env) connect(ctx context.Context) error {
	cfg, err := pgxpool.ParseConfig(e.dsn)
	if err != nil {
		return fmt.Errorf("bad -dsn: %w", err)
	}
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return connectError(cfg.ConnConfig, err)
	}
	e.pool = pool
	if e.uses&useInbox != 0 && e.layout == "" {
		// The layout of the table as it is; a table not created yet gets
		// the default one.
		if l, err := inbox.DetectLayout(ctx, pool, e.inboxConfig()); err == nil {
			e.layout = string(l)
		}
	}
	if err := sqltmpl.Load(queryFS, "sql", map[string]string{
		"DeadLetters":       pgx.Identifier{e.schema, e.deadLetters}.Sanitize(),
		"Outbox":            pgx.Identifier{e.schema, e.outboxTable}.Sanitize(),
		"OutboxDeadLetters": pgx.Identifier{e.schema, e.outboxTable + "_dead_letters"}.Sanitize(),
	}, &e.sql); err != nil {
		return err
	}
	e.dl, err = deadletter.New(pool, deadletter.Config{Schema: e.schema, DeadLetterTable: e.deadLetters,
		OutboxTable: e.outboxTable, Shards: e.shards, ShardsSetting: "-shards"})
	return err
}

// connectError says why a connection failed, once. A server that answered
// is not one that cannot be reached: a wrong password (SQLSTATE 28P01) or a
// login pg_hba.conf refuses (28000) is reported as an authentication
// failure, and any other refusal with its SQLSTATE.
func connectError(cfg *pgx.ConnConfig, err error) error {
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "28P01":
			return fmt.Errorf("authentication failed at Postgres %s: %s (SQLSTATE %s); check the user and password of -dsn or $DATABASE_URL", addr, pgErr.Message, pgErr.Code)
		case "28000":
			return fmt.Errorf("authentication failed at Postgres %s: %s (SQLSTATE %s); check the user and database of -dsn or $DATABASE_URL, and the server's pg_hba.conf", addr, pgErr.Message, pgErr.Code)
		}
		return fmt.Errorf("connection to Postgres at %s (database %q) refused: %s (SQLSTATE %s)", addr, cfg.Database, pgErr.Message, pgErr.Code)
	}
	return fmt.Errorf("cannot reach Postgres at %s: %s", addr, connectCauses(addr, err))
}

// connectCauses lists the distinct reasons of a failed connection. pgconn
// tries each address, and each TLS mode of sslmode=prefer, and reports every
// attempt, most often the same refusal twice.
func connectCauses(addr string, err error) string {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		err = ce.Unwrap()
	}
	return distinct(addr, err)
}

// distinct is err's message with repeated reasons of joined errors said
// once, and without the address of an attempt at addr.
func distinct(addr string, err error) string {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var msgs []string
		for _, c := range j.Unwrap() {
			if m := distinct(addr, c); !slices.Contains(msgs, m) {
				msgs = append(msgs, m)
			}
		}
		return strings.Join(msgs, "; ")
	}
	msg, inner := err.Error(), errors.Unwrap(err)
	switch {
	case inner == nil:
		return msg
	case strings.HasPrefix(msg, addr+" ("): // "127.0.0.1:5432 (127.0.0.1): dial error: ..."
		return distinct(addr, inner)
	}
	if prefix, ok := strings.CutSuffix(msg, inner.Error()); ok {
		return prefix + distinct(addr, inner)
	}
	return msg
}

func (e *env) close() {
	if e.pool != nil {
		e.pool.Close()
	}
}

// require fails with notMigrated unless every named table exists.
func (e *env) require(ctx context.Context, tables ...string) error {
	var missing []string
	for _, t := range tables {
		name := pgx.Identifier{e.schema, t}.Sanitize()
		var ok bool
		if err := e.pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", name).Scan(&ok); err != nil {
			return err
		}
		if !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return notMigrated{missing}
	}
	return nil
}

// parseAge reads a duration that may use a "d" (days) suffix.
func parseAge(s string) (time.Duration, error) { return deadletter.ParseAge(s) }

// queries are the statements rendered from sql/*.sql; the dead letters'
// are internal/deadletter's.
type queries struct {
	PruneCutoff                 string `sql:"prune_cutoff"`
	PruneDeadLetters            string `sql:"prune_dead_letters"`
	PruneDeadLettersCount       string `sql:"prune_dead_letters_count"`
	PruneOutboxDeadLetters      string `sql:"prune_outbox_dead_letters"`
	PruneOutboxDeadLettersCount string `sql:"prune_outbox_dead_letters_count"`
	PrunePublished              string `sql:"prune_published"`
	PrunePublishedCount         string `sql:"prune_published_count"`
}
