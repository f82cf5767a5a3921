package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/deadletter"
	"github.com/exactlyhq/exactly/outbox"
)

// handler runs a command once its flags are parsed.
type handler func(context.Context, *env, *flag.FlagSet) error

// command is one thing exactly does.
type command struct {
	name     string                      // as typed: "dead-letters replay"
	synopsis string                      // what follows the name in its usage line; defaults to "[flags]"
	maxArgs  int                         // positional arguments it takes; -1 for any number
	summary  string                      // one line, for the overview
	doc      string                      // what help says after the usage line
	uses     shared                      // the flags shared with other commands that it takes
	setup    func(*flag.FlagSet) handler // defines the command's own flags
}

// shared are flags that several commands take.
type shared uint

const (
	useDSN shared = 1 << iota
	useSchema
	useInbox
	useDeadLetters
	useOutbox
	useShards

	useTables = useSchema | useInbox | useDeadLetters | useOutbox
)

// fixed is the setup of a command without flags of its own.
func fixed(h handler) func(*flag.FlagSet) handler {
	return func(*flag.FlagSet) handler { return h }
}

var commands = []command{
	{
		name: "migrate up", summary: "apply the migrations not yet applied", uses: useDSN | useTables, setup: fixed(migrateUp),
		doc: `Applies every migration not yet applied to the inbox, the consumers' dead-letter
and attempts tables and the outbox, in one transaction under an advisory lock:
processes may run it at the same time. Prints what it applied.`,
	},
	{
		name: "migrate down", summary: "revert the most recently applied migration, one step", uses: useDSN | useTables, setup: fixed(migrateDown),
		doc: `Reverts the most recently applied migration of any of the tables, one step.
Exits 3 when none is applied.`,
	},
	{
		name: "migrate status", summary: "list the migrations, applied or pending", uses: useDSN | useTables, setup: fixed(migrateStatus),
		doc: `Lists every migration of the tables with the time it was applied, or pending.
Exits 3 when none is applied.`,
	},
	{
		name: "migrate sql", summary: "print the migrations' SQL for another migration tool; needs no database", uses: useTables, setup: fixed(migrateSQL),
		doc: `Prints the SQL of every migration, for teams that apply migrations with their
own tool (goose, atlas, psql). It connects to no database. The script does not
write the table in which "migrate up" records what it applied.`,
	},
	{
		name: "migrate partition-inbox", summary: "convert a single-table inbox into a partitioned one, in one transaction", uses: useDSN | useSchema | useInbox, setup: fixed(migratePartitionInbox),
		doc: `Converts the single-table inbox into the partitioned layout in one transaction:
locks it (claims wait), renames it TABLE_single, creates the partitioned table
in its place with partitions from the oldest claim's day to 3 days ahead, and
copies every token. Claims stop for as long as the copy takes; afterwards, a
process still configured for the single layout fails to claim (it never claims
under the wrong keys) until it runs with the partitioned layout. Follow
docs/runbook.md, "Switching an inbox to the partitioned layout". The old table
is kept for you to drop.`,
	},
	{
		name: "status", summary: "inbox size, outbox backlog, dead letters, consumer lag", uses: useDSN | useTables | useShards, setup: statusCmd,
		doc: `Shows the tokens and oldest token of each inbox scope; the backlog, oldest row and
owner of every outbox shard (NO RELAY when no relay holds it), and of any shard
at or above -shards that holds rows; unresolved dead letters by scope and
reason; outbox dead letters by reason. With brokers, it reads each group's
committed offset, end offset and lag per partition from Kafka; -group defaults
to the inbox scopes. The Kafka password is read from $KAFKA_SASL_PASSWORD only.`,
	},
	{
		name: "dead-letters list", summary: "list unresolved dead letters (-all: resolved too)", uses: useDSN | useSchema | useDeadLetters, setup: dlList,
		doc: `Lists the consumers' unresolved dead letters; with -all, replayed and discarded
ones too. -since and -until take an RFC 3339 time or an age (24h, 7d).`,
	},
	{
		name: "dead-letters show", synopsis: "[flags] ID", maxArgs: 1, summary: "one dead letter with its message", uses: useDSN | useSchema | useDeadLetters, setup: fixed(dlShow),
		doc: `Shows the dead letter numbered ID (see "dead-letters list"): reason, attempts,
last error, topic/partition/offset, key, headers and value. Exits 4 when there
is none.`,
	},
	{
		name: "dead-letters replay", synopsis: "[flags] [ID...]", maxArgs: -1, summary: "re-publish through the outbox (effectively once)",
		uses: useDSN | useSchema | useDeadLetters | useOutbox | useShards, setup: func(fs *flag.FlagSet) handler { return resolveCmd(fs, consumerDeadLetters, deadletter.Replayed) },
		doc: `Re-publishes the dead letters numbered ID, or those the filters select, through
the outbox: each in a transaction of its own, which enqueues the message with
its Idempotency-Key and marks the dead letter replayed, so a second run, or one
from another terminal, enqueues it once. -shards must be the writers'
outbox.Config.Shards. Exits 4 when a named ID is not found unresolved.`,
	},
	{
		name: "dead-letters discard", synopsis: "[flags] [ID...]", maxArgs: -1, summary: "mark as discarded",
		uses: useDSN | useSchema | useDeadLetters | useOutbox, setup: func(fs *flag.FlagSet) handler { return resolveCmd(fs, consumerDeadLetters, deadletter.Discarded) },
		doc: `Marks the dead letters numbered ID, or those the filters select, discarded;
nothing is published. Exits 4 when a named ID is not found unresolved.`,
	},
	{
		name: "outbox-dead-letters list", summary: "list messages Kafka rejected from the outbox", uses: useDSN | useSchema | useOutbox, setup: obdlList,
		doc: `Lists committed outbox messages that Kafka rejected (unknown topic, too large)
and the relay moved to the outbox's dead letters; with -all, replayed and
discarded ones too. -since and -until (when dead-lettered) take an RFC 3339
time or an age (24h, 7d).`,
	},
	{
		name: "outbox-dead-letters show", synopsis: "[flags] ID", maxArgs: 1, summary: "one outbox dead letter with its message", uses: useDSN | useSchema | useOutbox, setup: fixed(obdlShow),
		doc: `Shows the outbox dead letter numbered ID: message id, topic, reason, rejections,
last error, key and headers. Exits 4 when there is none.`,
	},
	{
		name: "outbox-dead-letters replay", synopsis: "[flags] [ID...]", maxArgs: -1, summary: "re-enqueue with their original message ids",
		uses: useDSN | useSchema | useOutbox | useShards, setup: func(fs *flag.FlagSet) handler { return resolveCmd(fs, outboxDeadLetters, deadletter.Replayed) },
		doc: `Re-enqueues the outbox dead letters numbered ID, or those the filters select,
with their original message ids, so a consumer that received an earlier attempt
skips them. -shards must be the writers' outbox.Config.Shards: a key goes back
to its shard. Exits 4 when a named ID is not found unresolved.`,
	},
	{
		name: "outbox-dead-letters discard", synopsis: "[flags] [ID...]", maxArgs: -1, summary: "mark as discarded",
		uses: useDSN | useSchema | useOutbox, setup: func(fs *flag.FlagSet) handler { return resolveCmd(fs, outboxDeadLetters, deadletter.Discarded) },
		doc: `Marks the outbox dead letters numbered ID, or those the filters select,
discarded; nothing is published.`,
	},
	{
		name: "console", summary: "serve the operator console: overview, dead letters, replay (a web page)",
		uses: useDSN | useTables | useShards, setup: consoleCmd,
		doc: `Serves the operator console on -listen until interrupted: the overview of the
consumer groups (from Kafka), the inbox, the outbox and the dead letters, and
pages to inspect, replay and discard dead letters with the guarantees of the
replay and discard commands. The JSON it is built from is under /api/.

Authentication comes from the environment: $EXACTLY_CONSOLE_USER and
$EXACTLY_CONSOLE_PASSWORD (basic authentication, what a browser asks for),
$EXACTLY_CONSOLE_TOKEN (a bearer token, for scripts), or both. Without them
the console serves a loopback address only, to requests addressed to a
loopback name. -read-only hides and refuses every action. -shards must be the
writers' outbox.Config.Shards. The Kafka password is read from
$KAFKA_SASL_PASSWORD only.`,
	},
	{
		name: "prune", synopsis: "-older-than AGE [flags]", summary: "retire inbox tokens older than AGE (e.g. 30d), and old dead letters", uses: useDSN | useSchema | useInbox | useDeadLetters | useOutbox, setup: pruneCmd,
		doc: `Retires inbox tokens claimed more than AGE ago (30d, 720h) by the database's
clock. A single-table inbox is pruned oldest first, -batch per transaction. A
partitioned inbox gets the partitions of its coming periods, loses every
partition whose tokens are all older than AGE (one DROP each, for every scope;
UUIDv7 tokens below the dropped range are then refused as expired, never
applied again), and its tokens without a partition are pruned row by row.
-dead-letters-older-than deletes resolved dead letters, the consumers' and the
outbox's; -published-older-than deletes outbox rows kept after publishing. A
token must outlive every redelivery of its message; an age below 1h is refused
as a likely typo unless -force.`,
	},
	{
		name: "version", summary: "print the version of exactly and of the Go that built it", setup: fixed(versionCmd),
		doc: `Prints the version of the exactly module this binary was built from ("(devel)"
for a build from a checkout) and the Go version that built it.`,
	},
}

// groups are the first words of commands that have subcommands.
var groups = []string{"migrate", "dead-letters", "outbox-dead-letters"}

func findCommand(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

func (c *command) usageLine() string {
	if c.synopsis == "" {
		return "exactly " + c.name + " [flags]"
	}
	return "exactly " + c.name + " " + c.synopsis
}

// flags returns the command's flag set, the env its shared flags fill,
// and its handler.
func (c *command) flags(stdout io.Writer) (*flag.FlagSet, *env, handler) {
	fs := flag.NewFlagSet("exactly "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported once, by run
	fs.Usage = func() {}
	e := &env{stdout: stdout, uses: c.uses}
	e.register(fs)
	return fs, e, c.setup(fs)
}

// help writes what the command does, its arguments and its flags.
func (c *command) help(w io.Writer) {
	fs, _, _ := c.flags(io.Discard)
	fmt.Fprintf(w, "Usage: %s\n\n%s\n\nFlags:\n", c.usageLine(), c.doc)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// register defines the shared flags the command uses.
func (e *env) register(fs *flag.FlagSet) {
	e.schema, e.inboxTable, e.deadLetters, e.outboxTable, e.shards = inbox.SchemaDefault, inbox.TableDefault, consumer.DeadLetterTableDefault, outbox.TableDefault, outbox.ShardsDefault
	if e.uses&useDSN != 0 {
		// No default from the environment here: help would print the password.
		fs.StringVar(&e.dsn, "dsn", "", "Postgres connection string (default $DATABASE_URL)")
	}
	if e.uses&useSchema != 0 {
		fs.StringVar(&e.schema, "schema", inbox.SchemaDefault, "schema of the tables")
	}
	if e.uses&useInbox != 0 {
		fs.StringVar(&e.inboxTable, "inbox-table", inbox.TableDefault, "inbox table")
		fs.StringVar(&e.layout, "inbox-layout", "", `inbox layout, "single" or "partitioned" (default: the table's, or "single" for a table not created yet)`)
	}
	if e.uses&useDeadLetters != 0 {
		fs.StringVar(&e.deadLetters, "dead-letter-table", consumer.DeadLetterTableDefault, "consumer dead-letter table")
	}
	if e.uses&useOutbox != 0 {
		fs.StringVar(&e.outboxTable, "outbox-table", outbox.TableDefault, "outbox table; its dead letters are in TABLE_dead_letters")
	}
	if e.uses&useShards != 0 {
		fs.IntVar(&e.shards, "shards", outbox.ShardsDefault, "outbox shards, as the writers' outbox.Config.Shards")
	}
	fs.BoolVar(&e.json, "json", false, `print JSON; errors too, on stderr: {"error": "...", "code": N}`)
}

// validate checks what flag parsing cannot.
func (e *env) validate() error {
	if e.uses&useDSN != 0 {
		if e.dsn == "" {
			e.dsn = os.Getenv("DATABASE_URL")
		}
		if e.dsn == "" {
			return errors.New("no database: set -dsn or DATABASE_URL")
		}
	}
	if e.uses&useInbox != 0 {
		switch inbox.Layout(e.layout) {
		case "", inbox.LayoutSingle, inbox.LayoutPartitioned:
		default:
			return fmt.Errorf("-inbox-layout %q is neither %q nor %q", e.layout, inbox.LayoutSingle, inbox.LayoutPartitioned)
		}
	}
	if e.uses&useTables != 0 {
		_, err := e.lines()
		return err
	}
	return nil
}

// session is one run of the command line.
type session struct {
	stdout, stderr io.Writer
	json           bool   // errors as JSON
	topic          string // what "exactly help" should describe after a usage error
}

func (s *session) dispatch(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError{"no command"}
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		return s.help(rest)
	}
	if slices.Contains(groups, name) {
		s.topic = name
		if len(rest) == 0 {
			return usageError{name + " needs a subcommand"}
		}
		if isHelpFlag(rest[0]) {
			return s.help([]string{name})
		}
		if strings.HasPrefix(rest[0], "-") {
			return usageError{name + " needs a subcommand before its flags"}
		}
		name, rest = name+" "+rest[0], rest[1:]
	}
	c := findCommand(name)
	if c == nil {
		return usageError{fmt.Sprintf("unknown command %q", name)}
	}
	s.topic = c.name
	fs, e, h := c.flags(s.stdout)
	// Flags may follow positional arguments: "replay 12 13 -dry-run".
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				c.help(s.stdout)
				return nil
			}
			return usageError{err.Error()}
		}
		if fs.NArg() == 0 {
			break
		}
		e.args = append(e.args, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	s.json = e.json
	switch {
	case c.maxArgs == 0 && len(e.args) > 0:
		return usageError{fmt.Sprintf("unexpected argument %q", e.args[0])}
	case c.maxArgs > 0 && len(e.args) > c.maxArgs:
		return usageError{fmt.Sprintf("unexpected argument %q", e.args[c.maxArgs])}
	}
	if err := e.validate(); err != nil {
		return usageError{err.Error()}
	}
	return h(ctx, e, fs)
}

func isHelpFlag(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "--h"
}

// help writes the overview, a group's commands or one command's help to
// stdout.
func (s *session) help(args []string) error {
	name := strings.Join(args, " ")
	s.topic = ""
	switch {
	case name == "":
		s.overview()
	case slices.Contains(groups, name):
		fmt.Fprintf(s.stdout, "Usage: exactly %s COMMAND [flags]\n\nCommands:\n", name)
		w := tabwriter.NewWriter(s.stdout, 0, 4, 2, ' ', 0)
		for _, c := range commands {
			if sub, ok := strings.CutPrefix(c.name, name+" "); ok {
				fmt.Fprintf(w, "  %s\t%s\n", strings.TrimSuffix(sub+" "+c.argsOnly(), " "), c.summary)
			}
		}
		_ = w.Flush()
		fmt.Fprintf(s.stdout, "\nRun \"exactly help %s COMMAND\" for a command's arguments and flags.\n", name)
	case findCommand(name) != nil:
		findCommand(name).help(s.stdout)
	default:
		return usageError{fmt.Sprintf("help: unknown command %q", name)}
	}
	return nil
}

// argsOnly is the synopsis without "[flags]".
func (c *command) argsOnly() string {
	return strings.TrimSpace(strings.ReplaceAll(c.synopsis, "[flags]", ""))
}

func (s *session) overview() {
	fmt.Fprint(s.stdout, "exactly: operate the exactly framework's tables\n\nUsage: exactly COMMAND [flags] [arguments]\n\nCommands:\n")
	w := tabwriter.NewWriter(s.stdout, 0, 4, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(w, "  %s\t%s\n", strings.TrimSuffix(c.name+" "+c.argsOnly(), " "), c.summary)
	}
	fmt.Fprintf(w, "  help [COMMAND]\tdescribe a command, its arguments and its flags\n")
	_ = w.Flush()
	fmt.Fprint(s.stdout, `
Run "exactly help COMMAND" or "exactly COMMAND -h" for a command's arguments
and flags. Commands that read the database take -dsn (default $DATABASE_URL);
-json prints JSON, and errors as {"error": "...", "code": N} on stderr.
Exit status: 0 success, 1 failure, 2 bad usage, 3 database not migrated,
4 not found.
`)
}

// report writes err once, as JSON under -json.
func (s *session) report(err error, code int) {
	if s.json {
		_ = json.NewEncoder(s.stderr).Encode(struct {
			Error string `json:"error"`
			Code  int    `json:"code"`
		}{err.Error(), code})
		return
	}
	fmt.Fprintf(s.stderr, "exactly: %v\n", err)
	if code == exitUsage {
		fmt.Fprintf(s.stderr, "Run %q for usage.\n", strings.TrimSpace("exactly help "+s.topic))
	}
}

// wantsJSON reports whether args ask for -json, for errors found before
// the flags are parsed, or while they are.
func wantsJSON(args []string) bool {
	for _, a := range args {
		if a == "--" {
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "json" {
			continue
		}
		if !hasValue {
			return true
		}
		b, err := strconv.ParseBool(value)
		return err == nil && b
	}
	return false
}
