// Command exactly inspects and operates the tables of the exactly framework:
// migrations, status, dead letters and retention.
//
//	exactly migrate up|down|status|sql
//	exactly status [-brokers host:port] [-group G]...
//	exactly dead-letters list|show|replay|discard
//	exactly outbox-dead-letters list|show|replay|discard
//	exactly prune -older-than 30d [-scope S] [-dry-run] [-force]
//
// Every command takes -dsn (default $DATABASE_URL), -schema and the table
// names, and -json for output meant for scripts. Exit status: 0 success, 1
// failure, 2 bad usage, 3 the database was never migrated, 4 not found.
package main

import (
	"context"
	"embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
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

const usage = `exactly: operate the exactly framework's tables

Usage:
  exactly migrate up|down|status|sql [flags]   apply, revert one step, list, or print the migrations
  exactly status [flags]                       inbox size, outbox backlog, dead letters, consumer lag
  exactly dead-letters list [flags]            list unresolved dead letters (-all: resolved too)
  exactly dead-letters show [flags] ID         one dead letter with its message
  exactly dead-letters replay [flags] [ID...]  re-publish through the outbox (effectively once)
  exactly dead-letters discard [flags] [ID...] mark as discarded
  exactly outbox-dead-letters list|show|replay|discard [flags] [ID...]
                                               the same for messages Kafka rejected from the outbox
                                               (replay re-enqueues them with their message ids)
  exactly prune -older-than AGE [flags]        delete inbox tokens older than AGE (e.g. 30d) by the
                                               database's clock; AGE below 1h needs -force

Run "exactly COMMAND -h" for the flags of a command. Exit status: 0 success,
1 failure, 2 bad usage, 3 database not migrated, 4 not found.
`

// usageError is a mistake in the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// notMigrated reports tables that do not exist.
type notMigrated struct{ tables []string }

func (e notMigrated) Error() string {
	return fmt.Sprintf("database not migrated: %s missing; run `exactly migrate up`", strings.Join(e.tables, ", "))
}

var errNotFound = errors.New("not found")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, stdout, stderr)
	var ue usageError
	var nm notMigrated
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "exactly: %s\n\n%s", ue.msg, usage)
		return exitUsage
	case errors.As(err, &nm):
		fmt.Fprintf(stderr, "exactly: %v\n", err)
		return exitNotMigrated
	case errors.Is(err, errNotFound):
		fmt.Fprintf(stderr, "exactly: %v\n", err)
		return exitNotFound
	default:
		fmt.Fprintf(stderr, "exactly: %v\n", err)
		return exitFailure
	}
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"no command"}
	}
	cmd, rest := args[0], args[1:]
	sub := ""
	if cmd == "migrate" || cmd == "dead-letters" || cmd == "outbox-dead-letters" {
		if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
			return usageError{cmd + " needs a subcommand"}
		}
		sub, rest = rest[0], rest[1:]
	}
	e := &env{stdout: stdout}
	fs := flag.NewFlagSet("exactly "+strings.TrimSpace(cmd+" "+sub), flag.ContinueOnError)
	fs.SetOutput(stderr)
	e.register(fs)
	var handler func(context.Context, *env, *flag.FlagSet) error
	switch cmd + " " + sub {
	case "migrate up":
		handler = migrateUp
	case "migrate down":
		handler = migrateDown
	case "migrate status":
		handler = migrateStatus
	case "migrate sql":
		handler = migrateSQL
	case "status ":
		handler = statusCmd(fs)
	case "dead-letters list":
		handler = dlList(fs)
	case "dead-letters show":
		handler = dlShow
	case "dead-letters replay":
		handler = resolveCmd(fs, consumerDeadLetters, "replayed")
	case "dead-letters discard":
		handler = resolveCmd(fs, consumerDeadLetters, "discarded")
	case "outbox-dead-letters list":
		handler = obdlList(fs)
	case "outbox-dead-letters show":
		handler = obdlShow
	case "outbox-dead-letters replay":
		handler = resolveCmd(fs, outboxDeadLetters, "replayed")
	case "outbox-dead-letters discard":
		handler = resolveCmd(fs, outboxDeadLetters, "discarded")
	case "prune ":
		handler = pruneCmd(fs)
	case "help ", "-h ", "--help ":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return usageError{fmt.Sprintf("unknown command %q", strings.TrimSpace(cmd+" "+sub))}
	}
	// Flags may follow positional arguments: "replay 12 13 -dry-run".
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return usageError{err.Error()}
		}
		if fs.NArg() == 0 {
			break
		}
		e.args = append(e.args, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(e.args) > 0 && cmd != "dead-letters" && cmd != "outbox-dead-letters" {
		return usageError{fmt.Sprintf("unexpected argument %q", e.args[0])}
	}
	if err := e.validate(); err != nil {
		return usageError{err.Error()}
	}
	return handler(ctx, e, fs)
}

// env holds the flags every command shares and the connection.
type env struct {
	dsn, schema, inboxTable, deadLetters, outboxTable string
	shards                                            int
	json                                              bool
	args                                              []string // positional arguments
	stdout                                            io.Writer
	pool                                              *pgxpool.Pool
	sql                                               map[string]string
}

func (e *env) register(fs *flag.FlagSet) {
	fs.StringVar(&e.dsn, "dsn", os.Getenv("DATABASE_URL"), "Postgres connection string (default $DATABASE_URL)")
	fs.StringVar(&e.schema, "schema", inbox.SchemaDefault, "schema of the tables")
	fs.StringVar(&e.inboxTable, "inbox-table", inbox.TableDefault, "inbox table")
	fs.StringVar(&e.deadLetters, "dead-letter-table", consumer.DeadLetterTableDefault, "consumer dead-letter table")
	fs.StringVar(&e.outboxTable, "outbox-table", outbox.TableDefault, "outbox table")
	fs.IntVar(&e.shards, "shards", outbox.ShardsDefault, "outbox shards (as configured in outbox.Config)")
	fs.BoolVar(&e.json, "json", false, "print JSON")
}

func (e *env) validate() error {
	if e.dsn == "" {
		return errors.New("no database: set -dsn or DATABASE_URL")
	}
	_, err := e.lines()
	return err
}

func (e *env) inboxConfig() inbox.Config {
	return inbox.Config{Schema: e.schema, Table: e.inboxTable}
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
		return fmt.Errorf("cannot reach Postgres at %s:%d (database %q): %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database, err)
	}
	e.pool = pool
	e.sql, err = sqltmpl.RenderDir(queryFS, "sql", map[string]string{
		"DeadLetters":       pgx.Identifier{e.schema, e.deadLetters}.Sanitize(),
		"Outbox":            pgx.Identifier{e.schema, e.outboxTable}.Sanitize(),
		"OutboxDeadLetters": pgx.Identifier{e.schema, e.outboxTable + "_dead_letters"}.Sanitize(),
	})
	return err
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
func parseAge(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		d, err := time.ParseDuration(n + "h")
		if err == nil && (d > math.MaxInt64/24 || d < math.MinInt64/24) {
			return 0, fmt.Errorf("%q is longer than a time.Duration holds (about 106751d)", s)
		}
		return d * 24, err
	}
	return time.ParseDuration(s)
}

// parseTime reads an RFC 3339 time or an age ("24h", "7d" ago).
func parseTime(s string) (*time.Time, error) {
	if s == "" {
		return nil, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return &t, nil
	}
	d, err := parseAge(s)
	if err != nil {
		return nil, fmt.Errorf("%q is neither an RFC 3339 time nor an age like 24h or 7d", s)
	}
	t := time.Now().Add(-d)
	return &t, nil
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
