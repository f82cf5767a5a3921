package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/outbox"
)

// ---- outbox dead letters: committed messages Kafka rejected

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

// storedHeader is a header as the outbox stores it (a JSON array of these).
type storedHeader struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
}

func addOutboxFilters(fs *flag.FlagSet, listing bool) filters {
	return filters{
		match:  fs.String("topic", "", "only messages for this topic"),
		reason: fs.String("reason", "", "only this reason (too_large, unknown_topic, rejected)"),
		since:  fs.String("since", "", "only rows dead-lettered since (RFC 3339 time, or an age like 24h or 7d)"),
		until:  fs.String("until", "", "only rows dead-lettered before (RFC 3339 time, or an age)"),
		limit:  fs.Int("limit", 100, "at most this many"),
		all:    addAll(fs, listing),
	}
}

func (e *env) listOutboxDeadLetters(ctx context.Context, f filters, ids []int64) ([]outboxDeadLetter, error) {
	args, err := f.args(ids)
	if err != nil {
		return nil, err
	}
	rows, err := e.pool.Query(ctx, e.sql.OutboxDeadLettersList, args...)
	if err != nil {
		return nil, err
	}
	var out []outboxDeadLetter
	var d outboxDeadLetter
	var headers []byte
	_, err = pgx.ForEachRow(rows, []any{&d.ID, &d.MessageID, &d.Topic, &d.Key, &d.Reason, &d.Error, &d.Rejections, &d.Attempts,
		&d.CreatedAt, &d.DeadAt, &d.ResolvedAt, &d.Resolution, &d.Value, &headers}, func() error {
		var hs []storedHeader
		if err := json.Unmarshal(headers, &hs); err != nil {
			return fmt.Errorf("outbox dead letter %d: headers: %w", d.ID, err)
		}
		d.Headers = map[string]string{}
		for _, h := range hs {
			d.Headers[h.Key] = string(h.Value)
		}
		out = append(out, d)
		d = outboxDeadLetter{}
		return nil
	})
	return out, err
}

func obdlList(fs *flag.FlagSet) handler {
	f := addOutboxFilters(fs, true)
	return func(ctx context.Context, e *env, _ *flag.FlagSet) error {
		if err := e.connect(ctx); err != nil {
			return err
		}
		defer e.close()
		if err := e.require(ctx, e.outboxTable+"_dead_letters"); err != nil {
			return err
		}
		dls, err := e.listOutboxDeadLetters(ctx, f, nil)
		if err != nil {
			return err
		}
		if e.json {
			if dls == nil {
				dls = []outboxDeadLetter{}
			}
			for i := range dls { // list shows no payloads; show does
				dls[i].Value, dls[i].Headers = nil, nil
			}
			return e.printJSON(dls)
		}
		var rows [][]string
		for _, d := range dls {
			rows = append(rows, []string{strconv.FormatInt(d.ID, 10), d.Topic, strconv.Quote(string(d.Key)), d.Reason,
				strconv.Itoa(d.Rejections), strconv.Itoa(len(d.Value)), d.DeadAt.UTC().Format(time.RFC3339), d.Resolution, shorten(d.Error, 60)})
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
	all := true
	limit := 1
	empty := ""
	dls, err := e.listOutboxDeadLetters(ctx, filters{match: &empty, reason: &empty, since: &empty, until: &empty, limit: &limit, all: &all}, ids)
	if err != nil {
		return err
	}
	if len(dls) == 0 {
		return fmt.Errorf("outbox dead letter %d: %w", ids[0], errNotFound)
	}
	d := dls[0]
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
	noun:    "outbox dead letters",
	filters: addOutboxFilters,
	tables:  func(e *env) []string { return []string{e.outboxTable, e.outboxTable + "_dead_letters"} },
	list: func(ctx context.Context, e *env, f filters, ids []int64) ([]int64, error) {
		dls, err := e.listOutboxDeadLetters(ctx, f, ids)
		return idsOf(dls, func(d outboxDeadLetter) int64 { return d.ID }), err
	},
	resolve: (*env).resolveOutbox,
}

func (e *env) resolveOutbox(ctx context.Context, ob *outbox.Outbox, id int64, resolution string) (bool, error) {
	found := false
	err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		if err := e.lockReplays(ctx, tx); err != nil {
			return err
		}
		var m outbox.Message
		var headers []byte
		var shard int
		err := tx.QueryRow(ctx, e.sql.OutboxDeadLettersLock, id).Scan(&m.ID, &m.Topic, &m.Key, &m.Value, &headers, &shard)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // resolved meanwhile
		}
		if err != nil {
			return err
		}
		found = true
		if resolution == "replayed" {
			// A key must go back to the shard its later rows are in, or two
			// relays could publish the key at once, out of order.
			if s := ob.Config().ShardOf(m.Key, m.ID); len(m.Key) > 0 && s != shard {
				return fmt.Errorf("its key was in shard %d, but -shards %d puts it in shard %d: pass -shards as the writers' outbox.Config.Shards", shard, ob.Config().Shards, s)
			}
			var hs []storedHeader
			if err := json.Unmarshal(headers, &hs); err != nil {
				return fmt.Errorf("headers: %w", err)
			}
			for _, h := range hs {
				m.Headers = append(m.Headers, kafka.Header{Key: h.Key, Value: h.Value})
				if h.Key == exactly.Header {
					m.ID = "" // the application's own token travels in its header
				}
			}
			if _, err := ob.EnqueueTx(ctx, tx, m); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, e.sql.OutboxDeadLettersResolve, id, resolution)
		return err
	})
	return found, err
}
