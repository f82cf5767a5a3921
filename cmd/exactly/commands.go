package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
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

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
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

type lagRow struct {
	Group     string `json:"group"`
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Committed int64  `json:"committed"`
	End       int64  `json:"end"`
	Lag       int64  `json:"lag"`
}

type status struct {
	Inbox             []scopeStatus        `json:"inbox"`
	Outbox            []outbox.ShardStatus `json:"outbox"`
	DeadLetters       []deadLetterCount    `json:"dead_letters"`
	OutboxDeadLetters []deadLetterCount    `json:"outbox_dead_letters"`
	Lag               []lagRow             `json:"lag,omitempty"`
	LagError          string               `json:"lag_error,omitempty"`
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
		rows, err := e.pool.Query(ctx, e.sql.DeadLettersSummary)
		if err != nil {
			return err
		}
		var d deadLetterCount
		if _, err := pgx.ForEachRow(rows, []any{&d.Scope, &d.Reason, &d.Count, &d.Oldest}, func() error {
			st.DeadLetters = append(st.DeadLetters, d)
			return nil
		}); err != nil {
			return err
		}
		rows, err = e.pool.Query(ctx, e.sql.OutboxDeadLetters)
		if err != nil {
			return err
		}
		d = deadLetterCount{}
		if _, err := pgx.ForEachRow(rows, []any{&d.Reason, &d.Count}, func() error {
			st.OutboxDeadLetters = append(st.OutboxDeadLetters, d)
			return nil
		}); err != nil {
			return err
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
// partition of the topics it has committed offsets for or its members
// subscribe to.
func consumerLag(ctx context.Context, transport *kafka.Transport, brokers, groups []string) ([]lagRow, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: transport}
	listed, err := client.ListGroups(ctx, &kafka.ListGroupsRequest{})
	if err != nil {
		return nil, err
	}
	exists := map[string]bool{}
	for _, g := range listed.Groups {
		exists[g.GroupID] = true
	}
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return nil, err
	}
	partitions := map[string][]int{}
	for _, t := range meta.Topics {
		if t.Internal {
			continue
		}
		for _, p := range t.Partitions {
			partitions[t.Name] = append(partitions[t.Name], p.ID)
		}
	}
	var out []lagRow
	for _, g := range groups {
		if !exists[g] {
			continue
		}
		offs, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: g, Topics: partitions})
		if err != nil {
			return out, fmt.Errorf("group %s: %w", g, err)
		}
		for topic, ps := range offs.Topics {
			committed := map[int]int64{}
			for _, p := range ps {
				if p.Error == nil && p.CommittedOffset >= 0 {
					committed[p.Partition] = p.CommittedOffset
				}
			}
			if len(committed) == 0 {
				continue // the group never consumed this topic
			}
			req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
			for _, p := range partitions[topic] {
				req.Topics[topic] = append(req.Topics[topic], kafka.LastOffsetOf(p))
			}
			ends, err := client.ListOffsets(ctx, req)
			if err != nil {
				return out, fmt.Errorf("topic %s: %w", topic, err)
			}
			for _, po := range ends.Topics[topic] {
				c, ok := committed[po.Partition]
				if !ok {
					c = -1
				}
				lag := po.LastOffset - max(c, 0)
				out = append(out, lagRow{Group: g, Topic: topic, Partition: po.Partition, Committed: c, End: po.LastOffset, Lag: lag})
			}
		}
	}
	slices.SortFunc(out, func(a, b lagRow) int {
		return cmp.Or(cmp.Compare(a.Group, b.Group), cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	return out, nil
}

// ---- dead letters

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

// filters select dead letters: of the consumers by -scope (match is the
// scope), of the outbox by -topic (match is the topic).
type filters struct {
	match, reason, since, until *string
	limit                       *int
	all                         *bool
}

// addFilters defines the flags that select consumer dead letters; -all
// (resolved ones too) only for listing them.
func addFilters(fs *flag.FlagSet, listing bool) filters {
	return filters{
		match:  fs.String("scope", "", "only this scope (consumer group)"),
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
	return *f.match != "" || *f.reason != "" || *f.since != "" || *f.until != ""
}

// args are the query arguments $1..$7 of the list queries.
func (f filters) args(ids []int64) ([]any, error) {
	since, err := parseTime(*f.since)
	if err != nil {
		return nil, usageError{"-since: " + err.Error()}
	}
	until, err := parseTime(*f.until)
	if err != nil {
		return nil, usageError{"-until: " + err.Error()}
	}
	if ids == nil {
		ids = []int64{}
	}
	return []any{optional(*f.match), optional(*f.reason), since, until, *f.all, ids, *f.limit}, nil
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

func (e *env) listDeadLetters(ctx context.Context, f filters, ids []int64) ([]deadLetter, error) {
	args, err := f.args(ids)
	if err != nil {
		return nil, err
	}
	rows, err := e.pool.Query(ctx, e.sql.DeadLettersList, args...)
	if err != nil {
		return nil, err
	}
	var out []deadLetter
	var d deadLetter
	_, err = pgx.ForEachRow(rows, []any{&d.ID, &d.Scope, &d.Token, &d.Reason, &d.Error, &d.Attempts, &d.Topic, &d.Partition, &d.Offset, &d.CreatedAt, &d.ResolvedAt, &d.Resolution}, func() error {
		out = append(out, d)
		d = deadLetter{}
		return nil
	})
	return out, err
}

func dlList(fs *flag.FlagSet) handler {
	f := addFilters(fs, true)
	return func(ctx context.Context, e *env, _ *flag.FlagSet) error {
		if err := e.connect(ctx); err != nil {
			return err
		}
		defer e.close()
		if err := e.require(ctx, e.deadLetters); err != nil {
			return err
		}
		dls, err := e.listDeadLetters(ctx, f, nil)
		if err != nil {
			return err
		}
		if e.json {
			if dls == nil {
				dls = []deadLetter{}
			}
			return e.printJSON(dls)
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
	var d deadLetter
	var keys []string
	var values [][]byte
	err = e.pool.QueryRow(ctx, e.sql.DeadLettersShow, id).Scan(&d.ID, &d.Scope, &d.Token, &d.Reason, &d.Error, &d.Attempts,
		&d.Topic, &d.Partition, &d.Offset, &d.CreatedAt, &d.ResolvedAt, &d.Resolution, &d.Key, &d.Value, &keys, &values, &d.Time)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("dead letter %d: %w", id, errNotFound)
	}
	if err != nil {
		return err
	}
	d.Headers = map[string]string{}
	for i, k := range keys {
		d.Headers[k] = string(values[i])
	}
	if e.json {
		return e.printJSON(d)
	}
	fmt.Fprintf(e.stdout, "id:         %d\nscope:      %q\ntoken:      %s\nreason:     %s\nattempts:   %d\nerror:      %s\nmessage:    %s/%d/%d\ncreated:    %s\n",
		d.ID, d.Scope, d.Token, d.Reason, d.Attempts, d.Error, d.Topic, d.Partition, d.Offset, d.CreatedAt.UTC().Format(time.RFC3339))
	if d.ResolvedAt != nil {
		fmt.Fprintf(e.stdout, "resolved:   %s at %s\n", d.Resolution, d.ResolvedAt.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(e.stdout, "key:        %q\n", d.Key)
	for i, k := range keys {
		fmt.Fprintf(e.stdout, "header:     %s: %q\n", k, values[i])
	}
	fmt.Fprintf(e.stdout, "value:      %q\n", d.Value)
	return nil
}

// deadLetterTable is what the dead-letters and outbox-dead-letters commands
// differ in.
type deadLetterTable struct {
	noun    string                            // in messages: "dead letters"
	filters func(*flag.FlagSet, bool) filters // the flags that select them
	tables  func(*env) []string               // the tables a replay needs
	list    func(context.Context, *env, filters, []int64) ([]int64, error)
	resolve func(*env, context.Context, *outbox.Outbox, int64, string) (bool, error)
}

var consumerDeadLetters = deadLetterTable{
	noun:    "dead letters",
	filters: addFilters,
	tables:  func(e *env) []string { return []string{e.deadLetters, e.outboxTable} },
	list: func(ctx context.Context, e *env, f filters, ids []int64) ([]int64, error) {
		dls, err := e.listDeadLetters(ctx, f, ids)
		return idsOf(dls, func(d deadLetter) int64 { return d.ID }), err
	},
	resolve: (*env).resolve,
}

// idsOf returns the id of each of xs.
func idsOf[T any](xs []T, id func(T) int64) []int64 {
	out := make([]int64, len(xs))
	for i, x := range xs {
		out[i] = id(x)
	}
	return out
}

// shorten cuts s to at most n runes, marking the cut with "...".
func shorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-3]) + "..."
}

// resolveCmd replays or discards dead letters of t, each in a transaction
// of its own: a replay enqueues the message into the outbox in the same
// transaction that marks the dead letter resolved, so running it twice, or
// from two terminals, enqueues it once.
func resolveCmd(fs *flag.FlagSet, t deadLetterTable, resolution string) handler {
	f := t.filters(fs, false)
	dryRun := fs.Bool("dry-run", false, "list what would be "+resolution+", change nothing")
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
		if err := e.connect(ctx); err != nil {
			return err
		}
		defer e.close()
		if err := e.require(ctx, t.tables(e)...); err != nil {
			return err
		}
		if resolution == "replayed" {
			if err := e.checkShards(ctx); err != nil {
				return err
			}
		}
		selected, err := t.list(ctx, e, f, ids)
		if err != nil {
			return err
		}
		ob, err := outbox.New(e.outboxConfig())
		if err != nil {
			return err
		}
		return e.resolveEach(selected, ids, resolution, *dryRun, func(id int64) (bool, error) {
			return t.resolve(e, ctx, ob, id, resolution)
		})
	}
}

// resolveEach resolves the selected dead letters one at a time (none with
// dryRun) and reports what it did; named are the IDs given on the command
// line, each of which must have been found.
func (e *env) resolveEach(selected, named []int64, resolution string, dryRun bool, resolve func(id int64) (bool, error)) error {
	var done []int64
	for _, id := range selected {
		if dryRun {
			done = append(done, id)
			continue
		}
		ok, err := resolve(id)
		if err != nil {
			return fmt.Errorf("dead letter %d: %w (%d resolved before it)", id, err, len(done))
		}
		if ok {
			done = append(done, id)
		}
	}
	if e.json {
		if done == nil {
			done = []int64{}
		}
		return e.printJSON(map[string]any{resolution: done, "dry_run": dryRun})
	}
	verb := resolution
	if dryRun {
		verb = "would be " + resolution
	}
	fmt.Fprintf(e.stdout, "%d dead letters %s: %v\n", len(done), verb, done)
	if len(named) > 0 && len(done) < len(named) {
		return fmt.Errorf("%d of the named dead letters were not found unresolved: %w", len(named)-len(done), errNotFound)
	}
	return nil
}

func (e *env) resolve(ctx context.Context, ob *outbox.Outbox, id int64, resolution string) (bool, error) {
	found := false
	err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		var m outbox.Message
		var keys []string
		var values [][]byte
		var d struct {
			partition int
			offset    int64
			reason    string
		}
		if err := e.lockReplays(ctx, tx); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, e.sql.DeadLettersLock, id).Scan(&m.Topic, &m.Key, &m.Value, &keys, &values, &d.partition, &d.offset, &d.reason)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // resolved meanwhile
		}
		if err != nil {
			return err
		}
		found = true
		if resolution == "replayed" {
			m.Headers, m.ID = replayHeaders(keys, values, d.reason, m.Topic, d.partition, d.offset)
			if _, err := ob.EnqueueTx(ctx, tx, m); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, e.sql.DeadLettersResolve, id, resolution)
		return err
	})
	return found, err
}

// checkShards refuses a -shards smaller than the writers' outbox.Config.Shards,
// as far as the rows in the outbox tell: a replay would put a key in another
// shard than its other rows.
func (e *env) checkShards(ctx context.Context) error {
	var highest int
	if err := e.pool.QueryRow(ctx, e.sql.MaxShard).Scan(&highest); err != nil {
		return err
	}
	if highest >= e.shards {
		return fmt.Errorf("the outbox holds rows in shard %d, but -shards is %d: pass -shards as the writers' outbox.Config.Shards", highest, e.shards)
	}
	return nil
}

// lockReplays serializes replays and discards into the outbox table, for
// the rest of tx.
func (e *env) lockReplays(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, e.sql.ReplayLock, e.schema+"."+e.outboxTable)
	return err
}

// replayHeaders returns the headers and outbox message id of a dead
// letter's replay. The replay carries one token, in one header spelled
// exactly as exactly.Header (the relay adds its own header beside any other
// spelling, and consumers refuse a message with two):
//
//   - The message's own token when it had a usable one: its single token
//     header (in any case), or the first of repeated ones in a dead letter
//     whose reason says the consumer found a token (written before repeated
//     headers were refused, when consumers read the first). Groups that
//     processed the original skip the replay.
//   - Otherwise (no_token, invalid_token: none, an empty one, one too long,
//     repeated), none of its token headers: the replay gets an id derived
//     from where the message was first read, which the relay sends as its
//     token, so that replays of one Kafka message from the dead letters of
//     several groups carry one token.
func replayHeaders(keys []string, values [][]byte, reason, topic string, partition int, offset int64) ([]kafka.Header, string) {
	var tokens []int
	for i, k := range keys {
		if strings.EqualFold(k, exactly.Header) {
			tokens = append(tokens, i)
		}
	}
	keep := -1
	tokenless := reason == consumer.ReasonNoToken || reason == consumer.ReasonInvalidToken
	if len(tokens) == 1 || len(tokens) > 1 && !tokenless {
		if _, err := inbox.ParseToken(string(values[tokens[0]])); err == nil {
			keep = tokens[0]
		}
	}
	var hs []kafka.Header
	for i, k := range keys {
		switch {
		case i == keep:
			hs = append(hs, kafka.Header{Key: exactly.Header, Value: values[i]})
		case !slices.Contains(tokens, i):
			hs = append(hs, kafka.Header{Key: k, Value: values[i]})
		}
	}
	if keep >= 0 {
		return hs, ""
	}
	return hs, replayID(topic, partition, offset)
}

// replayID is a UUID (version 8, RFC 9562) derived from a Kafka message's
// coordinates.
func replayID(topic string, partition int, offset int64) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("exactly-replay\x00%s\x00%d\x00%d", topic, partition, offset)))
	sum[6] = sum[6]&0x0f | 0x80
	sum[8] = sum[8]&0x3f | 0x80
	h := hex.EncodeToString(sum[:16])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
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
