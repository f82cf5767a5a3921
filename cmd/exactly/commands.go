package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/deadletter"
	"github.com/exactlyhq/exactly/internal/kafkagroup"
	"github.com/exactlyhq/exactly/migrate"
	"github.com/exactlyhq/exactly/outbox"
)

func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (e *env) table(header string, rows [][]string) {
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, header)
	for _, r := range rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	_ = w.Flush()
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339) + " (" + time.Since(t).Round(time.Second).String() + " ago)"
}

// ---- migrate

func migrateUp(ctx context.Context, e *env, _ *flag.FlagSet) error {
	if err := e.connect(ctx); err != nil {
		return err
	}
	defer e.close()
	lines, err := e.lines() // with the layout connect found
	if err != nil {
		return err
	}
	before, err := migrate.Status(ctx, e.pool, lines...)
	if err != nil {
		return err
	}
	if err := migrate.Up(ctx, e.pool, lines...); err != nil {
		return err
	}
	var applied []migrate.State
	for _, s := range before {
		if s.AppliedAt.IsZero() {
			applied = append(applied, s)
		}
	}
	// A partitioned inbox gets the partitions of its coming periods.
	var created []inbox.Partition
	if inbox.Layout(e.layout) == inbox.LayoutPartitioned {
		store, err := inbox.New(e.pool, e.inboxConfig())
		if err != nil {
			return err
		}
		ch, err := store.CreatePartitions(ctx)
		if err != nil {
			return err
		}
		created = ch.Created
	}
	if e.json {
		return e.printJSON(map[string]any{"applied": applied, "partitions_created": partitionsJSON(created)})
	}
	if len(applied) == 0 && len(created) == 0 {
		fmt.Fprintln(e.stdout, "up to date")
	}
	for _, s := range applied {
		fmt.Fprintf(e.stdout, "applied %s %03d_%s (%s.%s)\n", s.Component, s.Version, s.Name, e.schema, s.Target)
	}
	for _, p := range created {
		fmt.Fprintf(e.stdout, "created partition %s.%s for tokens of %s to %s\n", e.schema, p.Name, p.From.Format(time.RFC3339), p.To.Format(time.RFC3339))
	}
	return nil
}

type partitionJSON struct {
	Name string    `json:"name"`
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

func partitionsJSON(ps []inbox.Partition) []partitionJSON {
	out := []partitionJSON{}
	for _, p := range ps {
		out = append(out, partitionJSON{p.Name, p.From, p.To})
	}
	return out
}

func migrateDown(ctx context.Context, e *env, _ *flag.FlagSet) error {
	if err := e.connect(ctx); err != nil {
		return err
	}
	defer e.close()
	lines, err := e.lines() // with the layout connect found
	if err != nil {
		return err
	}
	states, err := migrate.Status(ctx, e.pool, lines...)
	if err != nil {
		return err
	}
	// One step: the most recently applied migration of any table.
	var last *migrate.State
	for i, s := range states {
		if !s.AppliedAt.IsZero() && (last == nil || !s.AppliedAt.Before(last.AppliedAt)) {
			last = &states[i]
		}
	}
	if last == nil {
		return notMigrated{[]string{"any migration"}}
	}
	for _, l := range lines {
		if l.Component == last.Component && l.Target == last.Target {
			m, err := migrate.Down(ctx, e.pool, l)
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(map[string]any{"reverted": map[string]any{"component": l.Component, "target": l.Target, "version": m.Version, "name": m.Name}})
			}
			fmt.Fprintf(e.stdout, "reverted %s %03d_%s (%s.%s)\n", l.Component, m.Version, m.Name, e.schema, l.Target)
			return nil
		}
	}
	return fmt.Errorf("applied migration %s %d belongs to no known table", last.Component, last.Version)
}

func migrateStatus(ctx context.Context, e *env, _ *flag.FlagSet) error {
	if err := e.connect(ctx); err != nil {
		return err
	}
	defer e.close()
	lines, err := e.lines() // with the layout connect found
	if err != nil {
		return err
	}
	states, err := migrate.Status(ctx, e.pool, lines...)
	if err != nil {
		return err
	}
	pending := 0
	for _, s := range states {
		if s.AppliedAt.IsZero() {
			pending++
		}
	}
	if e.json {
		if err := e.printJSON(map[string]any{"migrations": states, "pending": pending}); err != nil {
			return err
		}
	} else {
		var rows [][]string
		for _, s := range states {
			at := "pending"
			if !s.AppliedAt.IsZero() {
				at = s.AppliedAt.UTC().Format(time.RFC3339)
			}
			rows = append(rows, []string{s.Component, e.schema + "." + s.Target, fmt.Sprintf("%03d_%s", s.Version, s.Name), at})
		}
		e.table("COMPONENT\tTABLE\tMIGRATION\tAPPLIED", rows)
	}
	if pending == len(states) {
		return notMigrated{[]string{"every table"}}
	}
	return nil
}

// migratePartitionInbox converts a single-table inbox to the partitioned
// layout.
func migratePartitionInbox(ctx context.Context, e *env, _ *flag.FlagSet) error {
	if err := e.connect(ctx); err != nil {
		return err
	}
	defer e.close()
	if err := e.require(ctx, e.inboxTable); err != nil {
		return err
	}
	if inbox.Layout(e.layout) == inbox.LayoutPartitioned {
		return fmt.Errorf("%s is partitioned already", pgx.Identifier{e.schema, e.inboxTable}.Sanitize())
	}
	start := time.Now()
	conv, err := inbox.ConvertToPartitioned(ctx, e.pool, e.inboxConfig())
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(map[string]any{"copied": conv.Copied, "partitions_created": partitionsJSON(conv.Created), "old_table": conv.Old, "seconds": time.Since(start).Seconds()})
	}
	fmt.Fprintf(e.stdout, "converted %s to the partitioned layout in %v: %d tokens copied into %d partitions and the default and other ones\n",
		pgx.Identifier{e.schema, e.inboxTable}.Sanitize(), time.Since(start).Round(time.Millisecond), conv.Copied, len(conv.Created))
	fmt.Fprintf(e.stdout, "run every process with inbox.Config.Layout = inbox.LayoutPartitioned; once they claim, drop the old table:\n  DROP TABLE %s;\n", conv.Old)
	return nil
}

// migrateSQL prints the migrations; it connects to no database.
func migrateSQL(_ context.Context, e *env, _ *flag.FlagSet) error {
	lines, _ := e.lines()
	if e.json {
		type script struct {
			Component string `json:"component"`
			Schema    string `json:"schema"`
			Table     string `json:"table"`
			SQL       string `json:"sql"`
		}
		out := []script{}
		for _, l := range lines {
			out = append(out, script{l.Component, l.Schema, l.Target, l.SQL()})
		}
		return e.printJSON(out)
	}
	for _, l := range lines {
		fmt.Fprint(e.stdout, l.SQL())
	}
	return nil
}

// ---- status

type scopeStatus struct {
	Scope  string    `json:"scope"`
	Tokens int64     `json:"tokens"`
	Oldest time.Time `json:"oldest,omitzero"`
}

type deadLetterCount struct {
	Scope  string    `json:"scope,omitempty"`
	Reason string    `json:"reason"`
	Count  int64     `json:"count"`
	Oldest time.Time `json:"oldest,omitzero"`
}

type status struct {
	Inbox             []scopeStatus          `json:"inbox"`
	Outbox            []outbox.ShardStatus   `json:"outbox"`
	DeadLetters       []deadLetterCount      `json:"dead_letters"`
	OutboxDeadLetters []deadLetterCount      `json:"outbox_dead_letters"`
	Lag               []kafkagroup.Partition `json:"lag,omitempty"`
	LagError          string                 `json:"lag_error,omitempty"`
}

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func statusCmd(fs *flag.FlagSet) handler {
	brokers := fs.String("brokers", "", "Kafka brokers, comma-separated, to report consumer lag (default $KAFKA_BROKERS)")
	var groups stringList
	fs.Var(&groups, "group", "consumer group to report lag for (repeatable; default: every inbox scope that is a group)")
	sec := addKafkaSecurity(fs)
	return func(ctx context.Context, e *env, _ *flag.FlagSet) error {
		transport, err := sec.transport()
		if err != nil {
			return usageError{err.Error()}
		}
		if err := e.connect(ctx); err != nil {
			return err
		}
		defer e.close()
		if err := e.require(ctx, e.inboxTable, e.deadLetters, e.outboxTable); err != nil {
			return err
		}
		var st status
		store, err := inbox.New(e.pool, e.inboxConfig())
		if err != nil {
			return err
		}
		scopes, err := store.Scopes(ctx)
		if err != nil {
			return err
		}
		for _, sc := range scopes {
			s, err := store.WithScope(sc).Stats(ctx)
			if err != nil {
				return err
			}
			st.Inbox = append(st.Inbox, scopeStatus{Scope: s.Scope, Tokens: s.Tokens, Oldest: s.Oldest})
		}
		if st.Outbox, err = outbox.Shards(ctx, e.pool, e.outboxConfig()); err != nil {
			return err
		}
		counts, err := e.dl.ConsumerSummary(ctx)
		if err != nil {
			return err
		}
		for _, c := range counts {
			st.DeadLetters = append(st.DeadLetters, deadLetterCount{Scope: c.Scope, Reason: c.Reason, Count: c.Count, Oldest: c.Oldest})
		}
		if counts, err = e.dl.OutboxSummary(ctx); err != nil {
			return err
		}
		for _, c := range counts {
			st.OutboxDeadLetters = append(st.OutboxDeadLetters, deadLetterCount{Reason: c.Reason, Count: c.Count})
		}
		addrs := cmp.Or(*brokers, os.Getenv("KAFKA_BROKERS"))
		if addrs != "" {
			if len(groups) == 0 {
				groups = scopes
			}
			st.Lag, err = consumerLag(ctx, transport, strings.Split(addrs, ","), groups)
			if err != nil {
				st.LagError = err.Error()
			}
		}
		if e.json {
			if err := e.printJSON(st); err != nil {
				return err
			}
		} else {
			e.printStatus(st)
		}
		if st.LagError != "" {
			return fmt.Errorf("consumer lag: %s", st.LagError)
		}
		return nil
	}
}

func (e *env) printStatus(st status) {
	fmt.Fprintf(e.stdout, "INBOX %s\n", pgx.Identifier{e.schema, e.inboxTable}.Sanitize())
	var rows [][]string
	for _, s := range st.Inbox {
		rows = append(rows, []string{strconv.Quote(s.Scope), strconv.FormatInt(s.Tokens, 10), ago(s.Oldest)})
	}
	e.table("SCOPE\tTOKENS\tOLDEST", rows)

	fmt.Fprintf(e.stdout, "\nOUTBOX %s\n", pgx.Identifier{e.schema, e.outboxTable}.Sanitize())
	rows = nil
	var outside []string
	var outsideRows int64
	for _, s := range st.Outbox {
		owner := "yes"
		if !s.Owned {
			owner = "NO RELAY"
		}
		if s.Outside {
			owner += fmt.Sprintf(" (outside -shards %d)", e.shards)
			outside = append(outside, strconv.Itoa(s.Shard))
			outsideRows += s.Backlog
		}
		rows = append(rows, []string{strconv.Itoa(s.Shard), strconv.FormatInt(s.Backlog, 10), ago(s.Oldest), owner})
	}
	e.table("SHARD\tBACKLOG\tOLDEST\tOWNED", rows)
	if len(outside) > 0 {
		fmt.Fprintf(e.stdout, "WARNING: %d rows in shards [%s] at or above -shards %d: writers use more shards than -shards; no relay configured with %d shards publishes them (runbook: ExactlyOutboxShardUnowned)\n",
			outsideRows, strings.Join(outside, " "), e.shards, e.shards)
	}

	fmt.Fprintf(e.stdout, "\nDEAD LETTERS %s (unresolved)\n", pgx.Identifier{e.schema, e.deadLetters}.Sanitize())
	rows = nil
	for _, d := range st.DeadLetters {
		rows = append(rows, []string{strconv.Quote(d.Scope), d.Reason, strconv.FormatInt(d.Count, 10), ago(d.Oldest)})
	}
	e.table("SCOPE\tREASON\tCOUNT\tOLDEST", rows)

	fmt.Fprintf(e.stdout, "\nOUTBOX DEAD LETTERS %s\n", pgx.Identifier{e.schema, e.outboxTable + "_dead_letters"}.Sanitize())
	rows = nil
	for _, d := range st.OutboxDeadLetters {
		rows = append(rows, []string{d.Reason, strconv.FormatInt(d.Count, 10)})
	}
	e.table("REASON\tCOUNT", rows)

	if st.Lag != nil || st.LagError != "" {
		fmt.Fprintln(e.stdout, "\nCONSUMER LAG")
		rows = nil
		for _, l := range st.Lag {
			committed := strconv.FormatInt(l.Committed, 10)
			if l.Committed < 0 {
				committed = "none"
			}
			rows = append(rows, []string{l.Group, l.Topic, strconv.Itoa(l.Partition), committed, strconv.FormatInt(l.End, 10), strconv.FormatInt(l.Lag, 10)})
		}
		e.table("GROUP\tTOPIC\tPARTITION\tCOMMITTED\tEND\tLAG", rows)
	}
}

// consumerLag reports, for each group that exists in Kafka, the lag of every
// partition of the topics it has committed offsets for.
func consumerLag(ctx context.Context, transport *kafka.Transport, brokers, groups []string) ([]kafkagroup.Partition, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	defer transport.CloseIdleConnections()
	return kafkagroup.Lag(ctx, &kafka.Client{Addr: kafka.TCP(brokers...), Transport: transport}, groups)
}

// ---- dead letters

// deadLetter is a consumer dead letter as the CLI prints it.
type deadLetter struct {
	ID         int64             `json:"id"`
	Scope      string            `json:"scope"`
	Token      string            `json:"token,omitempty"`
	Reason     string            `json:"reason"`
	Error      string            `json:"error"`
	Attempts   int               `json:"attempts"`
	Topic      string            `json:"topic"`
	Partition  int               `json:"partition"`
	Offset     int64             `json:"offset"`
	CreatedAt  time.Time         `json:"created_at"`
	ResolvedAt *time.Time        `json:"resolved_at,omitempty"`
	Resolution string            `json:"resolution,omitempty"`
	Key        []byte            `json:"key,omitempty"`
	Value      []byte            `json:"value,omitempty"`
	Headers    map[string]string `json:"headers,omitempty"`
	Time       *time.Time        `json:"message_time,omitempty"`
}

// listed is d as a list prints it, without its message.
func listed(d deadletter.Consumer) deadLetter {
	return deadLetter{ID: d.ID, Scope: d.Scope, Token: d.Token, Reason: d.Reason, Error: d.Error, Attempts: d.Attempts,
		Topic: d.Topic, Partition: d.Partition, Offset: d.Offset, CreatedAt: d.CreatedAt, ResolvedAt: d.ResolvedAt, Resolution: d.Resolution}
}

// headerMap is hs by key; of repeated keys, the last.
func headerMap(hs []deadletter.Header) map[string]string {
	m := map[string]string{}
	for _, h := range hs {
		m[h.Key] = string(h.Value)
	}
	return m
}

// filters select dead letters: of the consumers by -scope, of the outbox by
// -topic.
type filters struct {
	scope, topic, reason, since, until *string
	limit                              *int
	all                                *bool
}

// addFilters defines the flags that select consumer dead letters; -all
// (resolved ones too) only for listing them.
func addFilters(fs *flag.FlagSet, listing bool) filters {
	return filters{
		scope:  fs.String("scope", "", "only this scope (consumer group)"),
		topic:  new(string),
		reason: fs.String("reason", "", "only this reason (no_token, token_conflict, handler_error, …)"),
		since:  fs.String("since", "", "only dead letters created since (RFC 3339 time, or an age like 24h or 7d)"),
		until:  fs.String("until", "", "only dead letters created before (RFC 3339 time, or an age)"),
		limit:  fs.Int("limit", 100, "at most this many"),
		all:    addAll(fs, listing),
	}
}

// addAll defines -all when listing; a replay or discard selects unresolved
// dead letters only.
func addAll(fs *flag.FlagSet, listing bool) *bool {
	if !listing {
		return new(bool)
	}
	return fs.Bool("all", false, "include resolved (replayed or discarded) dead letters")
}

func (f filters) any() bool {
	return *f.scope != "" || *f.topic != "" || *f.reason != "" || *f.since != "" || *f.until != ""
}

// filter is what the flags select, and ids when given.
func (f filters) filter(ids []int64) (deadletter.Filter, error) {
	since, err := deadletter.ParseTime(*f.since, time.Now())
	if err != nil {
		return deadletter.Filter{}, usageError{"-since: " + err.Error()}
	}
	until, err := deadletter.ParseTime(*f.until, time.Now())
	if err != nil {
		return deadletter.Filter{}, usageError{"-until: " + err.Error()}
	}
	df := deadletter.Filter{Scope: *f.scope, Topic: *f.topic, Reason: *f.reason, Since: since, Until: until, IDs: ids, Limit: *f.limit}
	if *f.all {
		df.State = deadletter.All
	}
	if df.Limit < 1 {
		return df, usageError{"-limit must be positive"}
	}
	return df, nil
}

// parseIDs reads the positional arguments as dead-letter IDs.
func parseIDs(args []string) ([]int64, error) {
	var ids []int64
	for _, a := range args {
		id, err := strconv.ParseInt(a, 10, 64)
		if err != nil {
			return nil, usageError{fmt.Sprintf("ID %q is not a number", a)}
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func dlList(fs *flag.FlagSet) handler {
	f := addFilters(fs, true)
	return func(ctx context.Context, e *env, _ *flag.FlagSet) error {
		df, err := f.filter(nil)
		if err != nil {
			return err
		}
		if err := e.connect(ctx); err != nil {
			return err
		}
		defer e.close()
		if err := e.require(ctx, e.deadLetters); err != nil {
			return err
		}
		dls, err := e.dl.ConsumerList(ctx, df)
		if err != nil {
			return err
		}
		if e.json {
			out := []deadLetter{}
			for _, d := range dls {
				out = append(out, listed(d))
			}
			return e.printJSON(out)
		}
		var rows [][]string
		for _, d := range dls {
			rows = append(rows, []string{strconv.FormatInt(d.ID, 10), strconv.Quote(d.Scope), d.Reason, strconv.Itoa(d.Attempts),
				fmt.Sprintf("%s/%d/%d", d.Topic, d.Partition, d.Offset), d.CreatedAt.UTC().Format(time.RFC3339), d.Resolution, shorten(d.Error, 60)})
		}
		e.table("ID\tSCOPE\tREASON\tATTEMPTS\tMESSAGE\tCREATED\tRESOLVED\tERROR", rows)
		return nil
	}
}

func dlShow(ctx context.Context, e *env, _ *flag.FlagSet) error {
	if len(e.args) != 1 {
		return usageError{"dead-letters show needs one ID"}
	}
	id, err := strconv.ParseInt(e.args[0], 10, 64)
	if err != nil {
		return usageError{fmt.Sprintf("ID %q is not a number", e.args[0])}
	}
	if err := e.connect(ctx); err != nil {
		return err
	}
	defer e.close()
	if err := e.require(ctx, e.deadLetters); err != nil {
		return err
	}
	dl, err := e.dl.Consumer(ctx, id)
	if err != nil {
		return err
	}
	d := listed(dl)
	d.Key, d.Value, d.Headers, d.Time = dl.Key, dl.Value, headerMap(dl.Headers), dl.MessageTime
	if e.json {
		return e.printJSON(d)
	}
	fmt.Fprintf(e.stdout, "id:         %d\nscope:      %q\ntoken:      %s\nreason:     %s\nattempts:   %d\nerror:      %s\nmessage:    %s/%d/%d\ncreated:    %s\n",
		d.ID, d.Scope, d.Token, d.Reason, d.Attempts, d.Error, d.Topic, d.Partition, d.Offset, d.CreatedAt.UTC().Format(time.RFC3339))
	if d.ResolvedAt != nil {
		fmt.Fprintf(e.stdout, "resolved:   %s at %s\n", d.Resolution, d.ResolvedAt.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(e.stdout, "key:        %q\n", d.Key)
	for _, h := range dl.Headers {
		fmt.Fprintf(e.stdout, "header:     %s: %q\n", h.Key, h.Value)
	}
	fmt.Fprintf(e.stdout, "value:      %q\n", d.Value)
	return nil
}

// deadLetterTable is what the dead-letters and outbox-dead-letters commands
// differ in.
type deadLetterTable struct {
	kind    deadletter.Kind
	noun    string                            // in messages: "dead letters"
	filters func(*flag.FlagSet, bool) filters // the flags that select them
	tables  func(*env) []string               // the tables a replay needs
}

var consumerDeadLetters = deadLetterTable{
	kind:    deadletter.ConsumerKind,
	noun:    "dead letters",
	filters: addFilters,
	tables:  func(e *env) []string { return []string{e.deadLetters, e.outboxTable} },
}

// shorten cuts s to at most n runes, marking the cut with "...".
func shorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-3]) + "..."
}

// resolveCmd replays or discards dead letters of t, each in a transaction
// of its own (internal/deadletter): a replay enqueues the message into the
// outbox in the same transaction that marks the dead letter resolved, so
// running it twice, or from two terminals, or from the console, enqueues
// it once.
func resolveCmd(fs *flag.FlagSet, t deadLetterTable, r deadletter.Resolution) handler {
	f := t.filters(fs, false)
	dryRun := fs.Bool("dry-run", false, "list what would be "+string(r)+", change nothing")
	return func(ctx context.Context, e *env, fs *flag.FlagSet) error {
		ids, err := parseIDs(e.args)
		if err != nil {
			return err
		}
		if len(ids) == 0 && !f.any() {
			var names []string
			fs.VisitAll(func(fl *flag.Flag) {
				if slices.Contains([]string{"scope", "topic", "reason", "since", "until"}, fl.Name) {
					names = append(names, "-"+fl.Name)
				}
			})
			return usageError{fmt.Sprintf("name %s by ID or filter (%s)", t.noun, strings.Join(names, ", "))}
		}
		df, err := f.filter(ids)
		if err != nil {
			return err
		}
		if err := e.connect(ctx); err != nil {
			return err
		}
		defer e.close()
		if err := e.require(ctx, t.tables(e)...); err != nil {
			return err
		}
		if r == deadletter.Replayed {
			if err := e.dl.CheckShards(ctx); err != nil {
				return err
			}
		}
		selected, err := e.dl.Select(ctx, t.kind, df)
		if err != nil {
			return err
		}
		done := selected
		if !*dryRun {
			done, err = e.dl.ResolveAll(ctx, t.kind, selected, r)
			if err != nil {
				return err
			}
		}
		return e.reportResolved(done, ids, string(r), *dryRun)
	}
}

// reportResolved reports the dead letters resolved (or that would be, with
// dryRun); named are the IDs given on the command line, each of which must
// have been found.
func (e *env) reportResolved(done, named []int64, resolution string, dryRun bool) error {
	if e.json {
		if done == nil {
			done = []int64{}
		}
		if err := e.printJSON(map[string]any{resolution: done, "dry_run": dryRun}); err != nil {
			return err
		}
	} else {
		verb := resolution
		if dryRun {
			verb = "would be " + resolution
		}
		fmt.Fprintf(e.stdout, "%d dead letters %s: %v\n", len(done), verb, done)
	}
	if len(named) > 0 && len(done) < len(named) {
		return fmt.Errorf("%d of the named dead letters were not found unresolved: %w", len(named)-len(done), errNotFound)
	}
	return nil
}

// ---- prune

// pruneFloor is the youngest age prune accepts without -force. Tokens must
// outlive every redelivery of their messages (days: topic retention, offset
// expiry, dead-letter replays); a token pruned younger turns the next
// redelivery into a second application of its effects. An age below an hour
// is almost certainly a typo (1s for 1d, 30m for 30d).
const pruneFloor = time.Hour

// pruneResult is what prune did, or would do with -dry-run.
type pruneResult struct {
	Before            *time.Time       `json:"before,omitempty"`
	DryRun            bool             `json:"dry_run"`
	Deleted           map[string]int64 `json:"deleted"`
	Total             int64            `json:"total"`
	PartitionsDropped []partitionJSON  `json:"partitions_dropped,omitempty"`
	PartitionsCreated []partitionJSON  `json:"partitions_created,omitempty"`
	PartitionsBusy    bool             `json:"partitions_busy,omitempty"`

	DeadLettersBefore *time.Time `json:"dead_letters_before,omitempty"`
	DeadLetters       *int64     `json:"dead_letters,omitempty"`
	OutboxDeadLetters *int64     `json:"outbox_dead_letters,omitempty"`
	PublishedBefore   *time.Time `json:"published_before,omitempty"`
	Published         *int64     `json:"published,omitempty"`
}

func pruneCmd(fs *flag.FlagSet) handler {
	olderThan := fs.String("older-than", "", "retire inbox tokens claimed longer ago than this (e.g. 30d, 720h), by the database's clock")
	deadLetters := fs.String("dead-letters-older-than", "", "delete dead letters (the consumers' and the outbox's) resolved longer ago than this; unresolved ones stay")
	published := fs.String("published-older-than", "", "delete outbox rows published longer ago than this (kept by relays with KeepPublished)")
	scope := fs.String("scope", "", "only this scope's tokens (default: every scope); partitions are dropped for every scope")
	batch := fs.Int("batch", inbox.PruneBatchSizeDefault, "rows deleted per transaction")
	period := fs.Duration("partition-period", 0, "period of the partitions prune creates in a partitioned inbox (default: the newest partition's, else 24h)")
	ahead := fs.Int("partitions-ahead", inbox.PartitionsAheadDefault, "periods after the current one whose partitions prune creates in a partitioned inbox")
	dryRun := fs.Bool("dry-run", false, "count what would be deleted, delete nothing")
	force := fs.Bool("force", false, fmt.Sprintf("allow an age below %gh", pruneFloor.Hours()))
	return func(ctx context.Context, e *env, _ *flag.FlagSet) error {
		if *olderThan == "" && *deadLetters == "" && *published == "" {
			return usageError{"prune needs -older-than, -dead-letters-older-than or -published-older-than"}
		}
		ages := map[string]time.Duration{}
		for name, v := range map[string]string{"older-than": *olderThan, "dead-letters-older-than": *deadLetters, "published-older-than": *published} {
			if v == "" {
				continue
			}
			age, err := parseAge(v)
			if err != nil || age <= 0 {
				return usageError{fmt.Sprintf("-%s %q is not a positive age like 30d or 720h", name, v)}
			}
			if age < pruneFloor && !*force {
				return usageError{fmt.Sprintf("-%s %s is below %gh: a token pruned that young turns the next redelivery of its message into a second application; pass -force to prune anyway", name, v, pruneFloor.Hours())}
			}
			ages[name] = age
		}
		if *batch < 1 {
			return usageError{"-batch must be positive"}
		}
		if *ahead < 0 {
			return usageError{"-partitions-ahead must not be negative"}
		}
		if err := e.connect(ctx); err != nil {
			return err
		}
		defer e.close()
		res := pruneResult{DryRun: *dryRun, Deleted: map[string]int64{}}
		var scopes []string
		if age, ok := ages["older-than"]; ok {
			var err error
			if scopes, err = e.pruneTokens(ctx, &res, age, *scope, *batch, *period, *ahead); err != nil {
				return err
			}
		}
		if age, ok := ages["dead-letters-older-than"]; ok {
			if err := e.pruneDeadLetters(ctx, &res, age, *batch); err != nil {
				return err
			}
		}
		if age, ok := ages["published-older-than"]; ok {
			if err := e.prunePublished(ctx, &res, age, *batch); err != nil {
				return err
			}
		}
		if e.json {
			return e.printJSON(res)
		}
		e.printPrune(res, scopes)
		return nil
	}
}

// cutoff is now minus age by the database's clock, which stamped the rows.
func (e *env) cutoff(ctx context.Context, age time.Duration) (time.Time, error) {
	var before time.Time
	if err := e.pool.QueryRow(ctx, e.sql.PruneCutoff, age.Microseconds()).Scan(&before); err != nil {
		return before, fmt.Errorf("prune cut-off: %w", err)
	}
	return before, nil
}

// pruneTokens retires the inbox's tokens older than age: in a partitioned
// inbox it creates the coming partitions and drops the old ones, then, in
// either layout, prunes each scope's tokens row by row (in a partitioned
// inbox, those that no time partition holds). It returns the scopes.
func (e *env) pruneTokens(ctx context.Context, res *pruneResult, age time.Duration, scope string, batch int, period time.Duration, ahead int) ([]string, error) {
	if err := e.require(ctx, e.inboxTable); err != nil {
		return nil, err
	}
	before, err := e.cutoff(ctx, age)
	if err != nil {
		return nil, err
	}
	res.Before = &before
	cfg := e.inboxConfig()
	cfg.PruneBatchSize = batch
	cfg.PartitionsAhead = max(ahead, 0)
	if ahead == 0 {
		cfg.PartitionsAhead = -1 // the current period only
	}
	store, err := inbox.New(e.pool, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Layout == inbox.LayoutPartitioned {
		if err := e.maintainPartitions(ctx, res, store, cfg, before, period); err != nil {
			return nil, err
		}
	}
	scopes := []string{scope}
	if scope == "" {
		if scopes, err = store.Scopes(ctx); err != nil {
			return nil, err
		}
	}
	for _, sc := range scopes {
		s := store.WithScope(sc)
		var n int64
		if res.DryRun {
			n, err = s.PruneCount(ctx, before)
		} else {
			n, err = s.Prune(ctx, before)
		}
		if err != nil {
			return nil, err
		}
		res.Deleted[sc] = n
		res.Total += n
	}
	return scopes, nil
}

// maintainPartitions creates the coming partitions of a partitioned inbox
// and drops those older than before; with -dry-run it lists what it would
// drop.
func (e *env) maintainPartitions(ctx context.Context, res *pruneResult, store *inbox.Store, cfg inbox.Config, before time.Time, period time.Duration) error {
	existing, err := store.Partitions(ctx)
	if err != nil {
		return err
	}
	if res.DryRun {
		var would []inbox.Partition
		for _, p := range existing {
			if !p.To.After(before) {
				would = append(would, p)
			}
		}
		res.PartitionsDropped = partitionsJSON(would)
		return nil
	}
	if period == 0 && len(existing) > 0 {
		period = existing[len(existing)-1].To.Sub(existing[len(existing)-1].From)
	}
	if period != 0 {
		cfg.PartitionPeriod = period
		if store, err = inbox.New(e.pool, cfg); err != nil {
			return err
		}
	}
	created, err := store.CreatePartitions(ctx)
	if err != nil {
		return err
	}
	dropped, err := store.DropPartitions(ctx, before)
	if err != nil {
		return err
	}
	res.PartitionsCreated = partitionsJSON(created.Created)
	res.PartitionsDropped = partitionsJSON(dropped.Dropped)
	res.PartitionsBusy = created.Busy || dropped.Busy
	return nil
}

// pruneDeadLetters deletes the dead letters, the consumers' and the
// outbox's, resolved longer ago than age.
func (e *env) pruneDeadLetters(ctx context.Context, res *pruneResult, age time.Duration, batch int) error {
	if err := e.require(ctx, e.deadLetters, e.outboxTable+"_dead_letters"); err != nil {
		return err
	}
	before, err := e.cutoff(ctx, age)
	if err != nil {
		return err
	}
	res.DeadLettersBefore = &before
	var consumer, ob int64
	if res.DryRun {
		err = e.count(ctx, e.sql.PruneDeadLettersCount, before, &consumer)
		if err == nil {
			err = e.count(ctx, e.sql.PruneOutboxDeadLettersCount, before, &ob)
		}
	} else {
		consumer, err = e.deleteBatches(ctx, e.sql.PruneDeadLetters, before, batch)
		if err == nil {
			ob, err = e.deleteBatches(ctx, e.sql.PruneOutboxDeadLetters, before, batch)
		}
	}
	res.DeadLetters, res.OutboxDeadLetters = &consumer, &ob
	return err
}

// prunePublished deletes the outbox rows published longer ago than age.
func (e *env) prunePublished(ctx context.Context, res *pruneResult, age time.Duration, batch int) error {
	if err := e.require(ctx, e.outboxTable); err != nil {
		return err
	}
	before, err := e.cutoff(ctx, age)
	if err != nil {
		return err
	}
	res.PublishedBefore = &before
	var n int64
	if res.DryRun {
		err = e.count(ctx, e.sql.PrunePublishedCount, before, &n)
	} else {
		n, err = e.deleteBatches(ctx, e.sql.PrunePublished, before, batch)
	}
	res.Published = &n
	return err
}

func (e *env) count(ctx context.Context, query string, before time.Time, n *int64) error {
	return e.pool.QueryRow(ctx, query, before).Scan(n)
}

// deleteBatches runs query (arguments: the cut-off and a batch size) until
// it deletes fewer rows than batch.
func (e *env) deleteBatches(ctx context.Context, query string, before time.Time, batch int) (int64, error) {
	var total int64
	for {
		tag, err := e.pool.Exec(ctx, query, before, batch)
		if err != nil {
			return total, err
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(batch) {
			return total, nil
		}
	}
}

func (e *env) printPrune(res pruneResult, scopes []string) {
	verb := "deleted"
	if res.DryRun {
		verb = "would delete"
	}
	if res.Before != nil {
		for _, p := range res.PartitionsCreated {
			fmt.Fprintf(e.stdout, "created partition %s for tokens of %s to %s\n", p.Name, p.From.Format(time.RFC3339), p.To.Format(time.RFC3339))
		}
		dropVerb := "dropped"
		if res.DryRun {
			dropVerb = "would drop"
		}
		for _, p := range res.PartitionsDropped {
			fmt.Fprintf(e.stdout, "%s partition %s, tokens of %s to %s\n", dropVerb, p.Name, p.From.Format(time.RFC3339), p.To.Format(time.RFC3339))
		}
		if res.PartitionsBusy {
			fmt.Fprintln(e.stdout, "another process was maintaining the partitions; what it did is not listed")
		}
		var rows [][]string
		for _, sc := range scopes {
			rows = append(rows, []string{strconv.Quote(sc), strconv.FormatInt(res.Deleted[sc], 10)})
		}
		e.table("SCOPE\tTOKENS", rows)
		fmt.Fprintf(e.stdout, "%s %d tokens claimed before %s\n", verb, res.Total, res.Before.UTC().Format(time.RFC3339))
	}
	if res.DeadLettersBefore != nil {
		fmt.Fprintf(e.stdout, "%s %d dead letters and %d outbox dead letters resolved before %s\n", verb, *res.DeadLetters, *res.OutboxDeadLetters, res.DeadLettersBefore.UTC().Format(time.RFC3339))
	}
	if res.PublishedBefore != nil {
		fmt.Fprintf(e.stdout, "%s %d outbox rows published before %s\n", verb, *res.Published, res.PublishedBefore.UTC().Format(time.RFC3339))
	}
}
