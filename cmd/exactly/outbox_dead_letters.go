package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/exactlyhq/exactly/internal/deadletter"
)

// ---- outbox dead letters: committed messages Kafka rejected

// outboxDeadLetter is an outbox dead letter as the CLI prints it.
type outboxDeadLetter struct {
	ID         int64             `json:"id"`
	MessageID  string            `json:"message_id"`
	Topic      string            `json:"topic"`
	Key        []byte            `json:"key,omitempty"`
	Reason     string            `json:"reason"`
	Error      string            `json:"error"`
	Rejections int               `json:"rejections"`
	Attempts   int               `json:"attempts"`
	CreatedAt  time.Time         `json:"created_at"`
	DeadAt     time.Time         `json:"dead_at"`
	ResolvedAt *time.Time        `json:"resolved_at,omitempty"`
	Resolution string            `json:"resolution,omitempty"`
	Value      []byte            `json:"value,omitempty"`
	Headers    map[string]string `json:"headers,omitempty"`
}

// listedOutbox is d as a list prints it, with its key (cut to 256 bytes)
// and without the rest of its message.
func listedOutbox(d deadletter.Outbox) outboxDeadLetter {
	return outboxDeadLetter{ID: d.ID, MessageID: d.MessageID, Topic: d.Topic, Key: d.Key, Reason: d.Reason, Error: d.Error,
		Rejections: d.Rejections, Attempts: d.Attempts, CreatedAt: d.CreatedAt, DeadAt: d.DeadAt, ResolvedAt: d.ResolvedAt, Resolution: d.Resolution}
}

func addOutboxFilters(fs *flag.FlagSet, listing bool) filters {
	return filters{
		scope:  new(string),
		topic:  fs.String("topic", "", "only messages for this topic"),
		reason: fs.String("reason", "", "only this reason (too_large, unknown_topic, rejected)"),
		since:  fs.String("since", "", "only rows dead-lettered since (RFC 3339 time, or an age like 24h or 7d)"),
		until:  fs.String("until", "", "only rows dead-lettered before (RFC 3339 time, or an age)"),
		limit:  fs.Int("limit", 100, "at most this many"),
		all:    addAll(fs, listing),
	}
}

func obdlList(fs *flag.FlagSet) handler {
	f := addOutboxFilters(fs, true)
	return func(ctx context.Context, e *env, _ *flag.FlagSet) error {
		df, err := f.filter(nil)
		if err != nil {
			return err
		}
		if err := e.connect(ctx); err != nil {
			return err
		}
		defer e.close()
		if err := e.require(ctx, e.outboxTable+"_dead_letters"); err != nil {
			return err
		}
		dls, err := e.dl.OutboxList(ctx, df)
		if err != nil {
			return err
		}
		if e.json {
			out := []outboxDeadLetter{}
			for _, d := range dls { // list shows no payloads; show does
				out = append(out, listedOutbox(d))
			}
			return e.printJSON(out)
		}
		var rows [][]string
		for _, d := range dls {
			rows = append(rows, []string{strconv.FormatInt(d.ID, 10), d.Topic, strconv.Quote(string(d.Key)), d.Reason,
				strconv.Itoa(d.Rejections), strconv.Itoa(d.ValueSize), d.DeadAt.UTC().Format(time.RFC3339), d.Resolution, shorten(d.Error, 60)})
		}
		e.table("ID\tTOPIC\tKEY\tREASON\tREJECTIONS\tBYTES\tDEAD\tRESOLVED\tERROR", rows)
		return nil
	}
}

func obdlShow(ctx context.Context, e *env, _ *flag.FlagSet) error {
	ids, err := parseIDs(e.args)
	if err != nil {
		return err
	}
	if len(ids) != 1 {
		return usageError{"outbox-dead-letters show needs one ID"}
	}
	if err := e.connect(ctx); err != nil {
		return err
	}
	defer e.close()
	if err := e.require(ctx, e.outboxTable+"_dead_letters"); err != nil {
		return err
	}
	dl, err := e.dl.Outbox(ctx, ids[0])
	if err != nil {
		return err
	}
	d := listedOutbox(dl)
	d.Value, d.Headers = dl.Value, headerMap(dl.Headers)
	if e.json {
		return e.printJSON(d)
	}
	fmt.Fprintf(e.stdout, "id:         %d\nmessage id: %s\ntopic:      %s\nreason:     %s\nrejections: %d (%d failed attempts)\nerror:      %s\ncreated:    %s\ndead:       %s\n",
		d.ID, d.MessageID, d.Topic, d.Reason, d.Rejections, d.Attempts, d.Error, d.CreatedAt.UTC().Format(time.RFC3339), d.DeadAt.UTC().Format(time.RFC3339))
	if d.ResolvedAt != nil {
		fmt.Fprintf(e.stdout, "resolved:   %s at %s\n", d.Resolution, d.ResolvedAt.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(e.stdout, "key:        %q\n", d.Key)
	for _, k := range slices.Sorted(maps.Keys(d.Headers)) {
		fmt.Fprintf(e.stdout, "header:     %s: %q\n", k, d.Headers[k])
	}
	fmt.Fprintf(e.stdout, "value:      %d bytes\n", len(d.Value))
	return nil
}

// outboxDeadLetters replays re-enqueue each message with its original
// message id, so a consumer that did receive an earlier attempt skips it.
// The shard is computed with -shards, which must match the writers'
// outbox.Config.Shards.
var outboxDeadLetters = deadLetterTable{
	kind:    deadletter.OutboxKind,
	noun:    "outbox dead letters",
	filters: addOutboxFilters,
	tables:  func(e *env) []string { return []string{e.outboxTable, e.outboxTable + "_dead_letters"} },
}
