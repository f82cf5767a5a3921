// Command consumer measures the consumer runner end to end, Kafka to
// Postgres (make bench-consumer).
//
// It produces a backlog of -messages messages (default 200,000) of -size
// bytes on a 4-partition topic, each with a UUIDv7 token in the
// Idempotency-Key header, keyed over -keys keys with a per-key sequence number
// in the value. A handler inserts one effects row per message. Variants:
//
//	dedup  (a) consumer.New, per-message handler, with the inbox
//	       (a') the same with a partitioned inbox (inbox.LayoutPartitioned)
//	plain  (b) the same runner with the inbox switched off
//	           (consumer.Config.AtLeastOnce): at-least-once
//	naive  (c) one transaction per message: begin, inbox claim, insert,
//	           commit, commit the offset; on the first -naive messages
//	replay (d) after (a), a new group whose inbox scope is (a)'s consumes
//	           the same backlog again: every message is a duplicate
//	       (d') the same after (a')
//	batch  (e) consumer.NewBatch, one COPY of all fresh messages per batch
//
// Each measurement runs from Run's start until the group's committed offsets
// reach the end of every partition, with its own consumer group and its own
// schema (dropped afterwards; (d) reuses (a)'s). After each one the effects
// are checked: none doubled, none lost, per-key order kept. Variants are
// interleaved, their order rotated each round, and the median of -rounds is
// reported. A CHECKPOINT precedes every measurement. Each measurement also
// reports this process's CPU (cores), the machine's busy share and, for naive,
// where its partition loop spent the time (fetch, database transaction,
// offset commit). A measurement that fails for an infrastructure
// reason (a broker restarted by a test on a shared machine) is discarded and
// taken again; a failed correctness check never is.
//
// Memory: the process's peak RSS is reported after the 200k runs, and with
// -rss1m one more dedup pass over a 1,000,000-message backlog shows whether
// it grows with the backlog.
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/bench/benchkit"
	"github.com/exactlyhq/exactly/internal/kafkatest"
)

const partitions = 4

// Values consumer.Config.withDefaults applies; the naive variant's kafka-go
// reader uses the same timers and the fetch sizes the consumer used before
// it fetched record batches itself.
const (
	sessionTimeout    = consumer.SessionTimeoutDefault
	heartbeatInterval = consumer.HeartbeatIntervalDefault
	retryInitial      = consumer.RetryInitialDefault
	maxMessageBytes   = consumer.MaxMessageBytesDefault
	readerMinBytes    = 1
	readerMaxBytes    = max(10<<20, 2*maxMessageBytes)
)

var (
	messages    = flag.Int("messages", 200_000, "messages in the backlog")
	rounds      = flag.Int("rounds", 3, "measurements per variant (median reported)")
	naiveN      = flag.Int("naive", 10_000, "messages the naive variant consumes (the first of the backlog)")
	keys        = flag.Int("keys", 1000, "distinct message keys")
	size        = flag.Int("size", 256, "bytes per message value")
	rss1m       = flag.Bool("rss1m", true, "also run dedup once on a 1,000,000-message backlog to compare RSS")
	bigN        = flag.Int("rss-messages", 1_000_000, "backlog of the -rss1m pass")
	batchSize   = flag.Int("batch-size", consumer.BatchSizeDefault, "consumer.Config.BatchSize for all variants")
	batchWait   = flag.Duration("batch-wait", consumer.BatchWaitDefault, "consumer.Config.BatchWait for all variants")
	fetchWait   = flag.Duration("fetch-max-wait", consumer.FetchMaxWaitDefault, "consumer.Config.FetchMaxWait for all variants")
	cpuProfile  = flag.String("cpuprofile", "", "write a CPU profile of the first round's -profile-variant measurement to this file")
	profVariant = flag.String("profile-variant", "dedup", "variant the -cpuprofile covers: dedup, dedup_part, plain, naive, replay, replay_part or batch")
)

type bench struct {
	pool      *pgxpool.Pool
	start     time.Time
	brokers   []string
	transport *kafka.Transport
	client    *kafka.Client
	logger    *slog.Logger
	groups    []string

	mu       sync.Mutex
	cleanups []func()
}

// backlog is a produced topic.
type backlog struct {
	topic string
	n     int
	ends  map[int]int64 // end offset of each partition
	naive map[int]int64 // end offset of each partition's share of the first -naive messages
}

func (b backlog) size() int64 { return sum(b.ends) }

// result is one measurement.
type result struct {
	msgs        int64
	elapsed     time.Duration
	firstCommit time.Duration // from Run's start to the first committed offset
	goCPU       float64       // CPU seconds of this process per wall second
	hostBusy    float64       // share of the machine's CPU time busy, 0..1
	peakRSS     int64         // bytes, VmRSS sampled during the run
	phases      string        // where the partition loop spent its time (naive)
}

// phases sums the time the partition loops of naive spend per step.
type phases struct {
	fetch, db, offset, batches, msgs atomic.Int64
}

func (p *phases) String() string {
	n := max(p.batches.Load(), 1)
	ms := func(v *atomic.Int64) float64 { return float64(v.Load()) / float64(n) / 1e6 }
	return fmt.Sprintf("%d batches of %.0f msgs on average; per batch: fetch %.2fms, db tx %.2fms, offset commit %.2fms",
		p.batches.Load(), float64(p.msgs.Load())/float64(n), ms(&p.fetch), ms(&p.db), ms(&p.offset))
}

func (r result) rate() float64 { return float64(r.msgs) / r.elapsed.Seconds() }

func main() {
	flag.Parse()
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	b := &bench{
		start:     time.Now(),
		brokers:   strings.Split(cmp.Or(os.Getenv("KAFKA_BROKERS"), "127.0.0.1:9092"), ","),
		transport: &kafka.Transport{},
		logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	b.client = &kafka.Client{Addr: kafka.TCP(b.brokers...), Timeout: 10 * time.Second, Transport: b.transport}
	ctx := context.Background()
	if err := b.connect(ctx); err != nil {
		log.Fatal(err)
	}
	defer b.pool.Close()
	err := b.main(ctx)
	b.cleanup()
	if err != nil {
		log.Fatalf("FAILED after %v: %v", time.Since(b.start).Round(time.Second), err)
	}
}

func (b *bench) connect(ctx context.Context) error {
	dsn := cmp.Or(os.Getenv("DATABASE_URL"), "postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable")
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	cfg.MaxConns = 16
	if b.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if err := b.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres unreachable at DATABASE_URL (run `make services`): %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := b.client.ApiVersions(pctx, &kafka.ApiVersionsRequest{}); err != nil {
		return fmt.Errorf("kafka unreachable at %v (run `make services`): %w", b.brokers, err)
	}
	return nil
}

// atEnd registers fn to run at the end, also on failure, last first.
func (b *bench) atEnd(fn func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cleanups = append(b.cleanups, fn)
}

func (b *bench) cleanup() {
	b.mu.Lock()
	fns := b.cleanups
	b.cleanups = nil
	b.mu.Unlock()
	for _, fn := range slices.Backward(fns) {
		fn()
	}
	if len(b.groups) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := b.client.DeleteGroups(ctx, &kafka.DeleteGroupsRequest{GroupIDs: b.groups}); err != nil {
			log.Printf("delete consumer groups: %v (ignored)", err)
		}
	}
	b.transport.CloseIdleConnections()
}

func (b *bench) main(ctx context.Context) error {
	if *naiveN > *messages {
		*naiveN = *messages
	}
	b.printSettings(ctx)
	cfgLine := b.configLine()
	log.Print(cfgLine)

	bl, err := b.produceBacklog(ctx, *messages, *naiveN)
	if err != nil {
		return err
	}

	// A unit returns its measurements by variant; replay runs right after
	// dedup, on its inbox.
	type unit struct {
		name string
		run  func(round int) (map[string]result, error)
	}
	single := func(name string, fn func(context.Context, backlog, int, bool) (result, error)) unit {
		return unit{name, func(round int) (map[string]result, error) {
			r, err := fn(ctx, bl, round, profiling(name, round))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			return map[string]result{name: r}, nil
		}}
	}
	dedupReplay := func(layout inbox.Layout) unit {
		dedup, replay := variantName("dedup", layout), variantName("replay", layout)
		return unit{dedup + "+" + replay, func(round int) (map[string]result, error) {
			scope, schema, a, err := b.dedup(ctx, bl, round, profiling(dedup, round), layout)
			if err != nil {
				b.dropSchema(schema)
				return nil, fmt.Errorf("%s: %w", dedup, err)
			}
			d, err := b.replay(ctx, bl, round, scope, schema, profiling(replay, round), layout)
			b.dropSchema(schema)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", replay, err)
			}
			return map[string]result{dedup: a, replay: d}, nil
		}}
	}
	units := []unit{
		dedupReplay(inbox.LayoutSingle),
		dedupReplay(inbox.LayoutPartitioned),
		single("plain", b.plain),
		single("naive", b.naive),
		single("batch", b.batch),
	}
	results := map[string][]result{}
	for round := range *rounds {
		// Rotate the order each round so that no variant always runs first.
		for k := range units {
			u := units[(k+round)%len(units)]
			rs, err := b.retrying(ctx, u.name, func() (map[string]result, error) { return u.run(round) })
			if err != nil {
				return fmt.Errorf("round %d: %w", round+1, err)
			}
			for _, name := range []string{"dedup", "replay", "dedup_part", "replay_part", "plain", "naive", "batch"} {
				r, ok := rs[name]
				if !ok {
					continue
				}
				results[name] = append(results[name], r)
				log.Printf("round %d %-6s %7d msgs in %6.2fs: %8.0f msgs/s (first commit %4dms, go cpu %.2f cores, host busy %3.0f%%, peak rss %d MB)",
					round+1, name, r.msgs, r.elapsed.Seconds(), r.rate(), r.firstCommit.Milliseconds(), r.goCPU, 100*r.hostBusy, r.peakRSS>>20)
				if r.phases != "" {
					log.Printf("        %-6s %s", name, r.phases)
				}
			}
		}
	}
	hwm200k := processPeakRSS()
	log.Printf("after the %d-message runs: process VmHWM %d MB, VmRSS %d MB", bl.n, hwm200k>>20, procStatus("VmRSS")>>20)
	b.deleteTopic(bl.topic)

	var big result
	var hwmBig int64
	if *rss1m {
		bigBl, err := b.produceBacklog(ctx, *bigN, 0)
		if err != nil {
			return err
		}
		rs, err := b.retrying(ctx, "dedup 1M", func() (map[string]result, error) {
			_, schema, r, err := b.dedup(ctx, bigBl, -1, false, inbox.LayoutSingle)
			b.dropSchema(schema)
			return map[string]result{"dedup": r}, err
		})
		if err != nil {
			return fmt.Errorf("dedup on %d messages: %w", bigBl.n, err)
		}
		big = rs["dedup"]
		hwmBig = processPeakRSS()
		log.Printf("dedup on %d messages: %.0f msgs/s, peak rss during the run %d MB, process VmHWM %d MB", bigBl.n, big.rate(), big.peakRSS>>20, hwmBig>>20)
		b.deleteTopic(bigBl.topic)
	}

	// Summary.
	med := func(name string) result { return medianResult(results[name]) }
	fmt.Println()
	fmt.Println(cfgLine)
	fmt.Printf("\n%-14s %8s %10s %10s %10s %12s %8s %9s %12s   (median of %d rounds; -p: partitioned inbox)\n",
		"variant", "msgs", "msgs/s", "min", "max", "first_commit", "go_cpu", "host_busy", "peak_rss_mb", *rounds)
	for _, v := range []struct{ name, label string }{
		{"dedup", "(a) dedup"}, {"dedup_part", "(a') dedup-p"}, {"plain", "(b) plain"}, {"naive", "(c) naive"},
		{"replay", "(d) replay"}, {"replay_part", "(d') replay-p"}, {"batch", "(e) batch"},
	} {
		rs := results[v.name]
		rates := make([]float64, len(rs))
		for i, r := range rs {
			rates[i] = r.rate()
		}
		m := med(v.name)
		fmt.Printf("%-14s %8d %10.0f %10.0f %10.0f %10dms %8.2f %8.0f%% %12d\n",
			v.label, m.msgs, m.rate(), slices.Min(rates), slices.Max(rates), m.firstCommit.Milliseconds(), m.goCPU, 100*m.hostBusy, maxRSS(rs)>>20)
	}
	if *rss1m {
		fmt.Printf("%-14s %8d %10.0f %10s %10s %10dms %8.2f %8.0f%% %12d\n",
			"(a) dedup 1M", big.msgs, big.rate(), "-", "-", big.firstCommit.Milliseconds(), big.goCPU, 100*big.hostBusy, big.peakRSS>>20)
	}
	fmt.Println()
	if *rss1m {
		fmt.Printf("rss: %dk backlog: dedup run peak %d MB, process peak so far %d MB; %dk backlog: dedup run peak %d MB, process peak so far %d MB\n",
			bl.n/1000, maxRSS(results["dedup"])>>20, hwm200k>>20, *bigN/1000, big.peakRSS>>20, hwmBig>>20)
	} else {
		fmt.Printf("rss: %dk backlog: dedup run peak %d MB, process peak so far %d MB; 1M pass skipped (-rss1m=false)\n",
			bl.n/1000, maxRSS(results["dedup"])>>20, hwm200k>>20)
	}
	a, bb, c, d, e := med("dedup").rate(), med("plain").rate(), med("naive").rate(), med("replay").rate(), med("batch").rate()
	ap, dp := med("dedup_part").rate(), med("replay_part").rate()
	// The ratios are the last line, after everything else, stderr included.
	log.Printf("total run time %v", time.Since(b.start).Round(time.Second))
	fmt.Printf("consumer: dedup/plain=%.2f dedup_partitioned/plain=%.2f batched/naive=%.1f replay/fresh=%.2f replay/fresh_partitioned=%.2f msgs_per_s=%.0f batch_handler_msgs_per_s=%.0f rss_mb=%d\n",
		a/bb, ap/bb, a/c, d/a, dp/ap, a, e, hwm200k>>20)
	return nil
}

// correctnessError is a failed check of the effects: never retried.
type correctnessError struct{ err error }

func (e *correctnessError) Error() string { return "CORRECTNESS: " + e.err.Error() }
func (e *correctnessError) Unwrap() error { return e.err }

// retrying runs a measurement up to three times while it fails for another
// reason than a correctness check, such as a broker restarted by someone
// else's test on a shared machine. A failed attempt's numbers are discarded.
func (b *bench) retrying(ctx context.Context, name string, fn func() (map[string]result, error)) (map[string]result, error) {
	for attempt := 1; ; attempt++ {
		rs, err := fn()
		var ce *correctnessError
		if err == nil || errors.As(err, &ce) || attempt == 3 {
			return rs, err
		}
		log.Printf("%s: measurement failed, discarded (%v); waiting for Kafka and Postgres, then measuring again", name, err)
		deadline := time.Now().Add(3 * time.Minute)
		for {
			time.Sleep(2 * time.Second)
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, kerr := b.client.ApiVersions(pctx, &kafka.ApiVersionsRequest{})
			perr := b.pool.Ping(pctx)
			cancel()
			if kerr == nil && perr == nil {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("%s: services did not come back: kafka %v, postgres %v (after: %w)", name, kerr, perr, err)
			}
		}
	}
}

// variantName is the name of a variant run with layout: "dedup" and
// "dedup_part".
func variantName(name string, layout inbox.Layout) string {
	if layout == inbox.LayoutPartitioned {
		return name + "_part"
	}
	return name
}

func profiling(variant string, round int) bool {
	return *cpuProfile != "" && round == 0 && variant == *profVariant
}

func (b *bench) configLine() string {
	return fmt.Sprintf("config (all variants): consumer BatchSize=%d BatchWait=%v FetchMaxWait=%v SessionTimeout=%v HeartbeatInterval=%v StartOffset=first; "+
		"naive's kafka-go reader MinBytes=%d MaxBytes=%dMiB MaxWait=%v QueueCapacity=%d (the consumer fetches record batches itself, 1 MiB per response); "+
		"backlog %d msgs x %d B on %d partitions, %d keys; naive on the first %d; pool MaxConns=%d; GOMAXPROCS=%d",
		*batchSize, *batchWait, *fetchWait, sessionTimeout, heartbeatInterval,
		readerMinBytes, readerMaxBytes>>20, *fetchWait, *batchSize,
		*messages, *size, partitions, *keys, *naiveN, b.pool.Config().MaxConns, runtime.GOMAXPROCS(0))
}

func (b *bench) printSettings(ctx context.Context) {
	rows, err := b.pool.Query(ctx, `SELECT name, setting, coalesce(unit, '') FROM pg_settings
		WHERE name IN ('server_version', 'synchronous_commit', 'shared_buffers', 'max_wal_size', 'fsync', 'full_page_writes')
		ORDER BY name`)
	if err != nil {
		log.Printf("pg_settings: %v", err)
		return
	}
	var name, setting, unit string
	_, err = pgx.ForEachRow(rows, []any{&name, &setting, &unit}, func() error {
		log.Printf("postgres %s = %s%s", name, setting, unit)
		return nil
	})
	if err != nil {
		log.Printf("pg_settings: %v", err)
	}
}

// ---- the variants ----

func (b *bench) consumerConfig(group, topic, schema, scope string, layout inbox.Layout) consumer.Config {
	return consumer.Config{
		Brokers:      b.brokers,
		GroupID:      group,
		Topics:       []string{topic},
		Pool:         b.pool,
		Inbox:        inbox.Config{Schema: schema, Scope: scope, Layout: layout},
		BatchSize:    *batchSize,
		BatchWait:    *batchWait,
		FetchMaxWait: *fetchWait,
		Logger:       b.logger,
	}
}

// names returns a fresh group id and schema for one measurement.
func (b *bench) names(variant string, round int) (group, schema string) {
	r := "big"
	if round >= 0 {
		r = "r" + strconv.Itoa(round+1)
	}
	s := randomSuffix()
	group = fmt.Sprintf("bench-consumer-%s-%s-%s", variant, r, s)
	b.groups = append(b.groups, group)
	return group, fmt.Sprintf("bench_consumer_%s_%s_%s", variant, r, s)
}

// dedup runs (a), or (a') with inbox.LayoutPartitioned. It leaves the
// schema in place for replay and returns the inbox scope it used; the
// caller drops the schema.
func (b *bench) dedup(ctx context.Context, bl backlog, round int, profile bool, layout inbox.Layout) (scope, schema string, r result, err error) {
	group, schema := b.names(variantName("dedup", layout), round)
	scope = group // set explicitly, so that replay can name it
	cfg := b.consumerConfig(group, bl.topic, schema, scope, layout)
	effects, err := b.prepareSchema(ctx, schema, &cfg)
	if err != nil {
		return scope, schema, r, err
	}
	ins := insertSQL(effects)
	c, err := consumer.New(cfg, consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		return insertEffect(ctx, tx, ins, m.Token, m.Message)
	}))
	if err != nil {
		return scope, schema, r, err
	}
	r, err = b.measure(ctx, group, bl.topic, bl.ends, profile, c.Run)
	if err != nil {
		return scope, schema, r, err
	}
	return scope, schema, r, b.verify(ctx, schema, effects, bl.ends)
}

// replay runs (d), or (d') after (a'): a new group over the same backlog
// with (a)'s scope and tables. Every message is a duplicate.
func (b *bench) replay(ctx context.Context, bl backlog, round int, scope, schema string, profile bool, layout inbox.Layout) (result, error) {
	group, _ := b.names(variantName("replay", layout), round)
	cfg := b.consumerConfig(group, bl.topic, schema, scope, layout)
	effects := pgx.Identifier{schema, "effects"}.Sanitize()
	var before, maxID int64
	if err := b.pool.QueryRow(ctx, "SELECT count(*), coalesce(max(id), 0) FROM "+effects).Scan(&before, &maxID); err != nil {
		return result{}, err
	}
	ins := insertSQL(effects)
	c, err := consumer.New(cfg, consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		return insertEffect(ctx, tx, ins, m.Token, m.Message)
	}))
	if err != nil {
		return result{}, err
	}
	r, err := b.measure(ctx, group, bl.topic, bl.ends, profile, c.Run)
	if err != nil {
		return r, err
	}
	var after, newRows int64
	if err := b.pool.QueryRow(ctx, "SELECT count(*), count(*) FILTER (WHERE id > $1) FROM "+effects, maxID).Scan(&after, &newRows); err != nil {
		return r, err
	}
	if after != before || newRows != 0 {
		return r, &correctnessError{fmt.Errorf("replay applied %d new effects (%d rows before, %d after): duplicates were not skipped", newRows, before, after)}
	}
	return r, b.verify(ctx, schema, effects, bl.ends)
}

// batch runs (e): consumer.NewBatch with one COPY per batch.
func (b *bench) batch(ctx context.Context, bl backlog, round int, profile bool) (result, error) {
	group, schema := b.names("batch", round)
	defer b.dropSchema(schema)
	cfg := b.consumerConfig(group, bl.topic, schema, group, inbox.LayoutSingle)
	effects, err := b.prepareSchema(ctx, schema, &cfg)
	if err != nil {
		return result{}, err
	}
	table := pgx.Identifier{schema, "effects"}
	cols := []string{"token", "key", "seq", "value", "kafka_partition", "kafka_offset"}
	c, err := consumer.NewBatch(cfg, consumer.BatchHandlerFunc(func(ctx context.Context, tx pgx.Tx, msgs []consumer.Message) error {
		rows := make([][]any, len(msgs))
		for i, m := range msgs {
			seq, err := parseSeq(m.Value)
			if err != nil {
				return consumer.Permanent(err)
			}
			rows[i] = []any{m.Token.String(), string(m.Key), seq, string(m.Value), m.Partition, m.Offset}
		}
		_, err := tx.CopyFrom(ctx, table, cols, pgx.CopyFromRows(rows))
		return err
	}))
	if err != nil {
		return result{}, err
	}
	r, err := b.measure(ctx, group, bl.topic, bl.ends, profile, c.Run)
	if err != nil {
		return r, err
	}
	return r, b.verify(ctx, schema, effects, bl.ends)
}

// plain runs (b): the same runner with the inbox switched off
// (consumer.Config.AtLeastOnce). The handler reads the token itself, so the
// effects rows are the same as (a)'s and are checked the same way.
func (b *bench) plain(ctx context.Context, bl backlog, round int, profile bool) (result, error) {
	group, schema := b.names("plain", round)
	defer b.dropSchema(schema)
	cfg := b.consumerConfig(group, bl.topic, schema, group, inbox.LayoutSingle)
	cfg.AtLeastOnce = true
	effects, err := b.prepareSchema(ctx, schema, &cfg)
	if err != nil {
		return result{}, err
	}
	ins := insertSQL(effects)
	tokens := consumer.FromHeader("")
	c, err := consumer.New(cfg, consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		tok, err := tokens.Token(m.Message)
		if err != nil {
			return consumer.Permanent(err)
		}
		return insertEffect(ctx, tx, ins, tok, m.Message)
	}))
	if err != nil {
		return result{}, err
	}
	r, err := b.measure(ctx, group, bl.topic, bl.ends, profile, c.Run)
	if err != nil {
		return r, err
	}
	return r, b.verify(ctx, schema, effects, bl.ends)
}

// naive runs (c): a transaction and an offset commit per message, on the
// first -naive messages of the backlog.
func (b *bench) naive(ctx context.Context, bl backlog, round int, profile bool) (result, error) {
	group, schema := b.names("naive", round)
	defer b.dropSchema(schema)
	icfg := inbox.Config{Schema: schema, Scope: group}
	effects, err := b.prepareSchema(ctx, schema, nil)
	if err != nil {
		return result{}, err
	}
	if err := inbox.Migrate(ctx, b.pool, icfg); err != nil {
		return result{}, err
	}
	store, err := inbox.New(b.pool, icfg)
	if err != nil {
		return result{}, err
	}
	ins := insertSQL(effects)
	tokens := consumer.FromHeader("")
	var ph phases
	part := func(fetchCtx, procCtx context.Context, gen *kafka.Generation, r *kafka.Reader, topic string, id int) error {
		limit := bl.naive[id]
		// Returning would end the generation (kafka-go ends it as soon as
		// one partition's function returns): park until it ends instead.
		idle := func() error { <-fetchCtx.Done(); return nil }
		if r.Offset() >= limit {
			return idle()
		}
		for {
			t0 := time.Now()
			m, err := r.FetchMessage(fetchCtx)
			if err != nil {
				if fetchCtx.Err() != nil {
					return nil
				}
				time.Sleep(retryInitial)
				continue
			}
			t1 := time.Now()
			if m.Offset >= limit {
				return idle()
			}
			tok, err := tokens.Token(m)
			if err != nil {
				return fmt.Errorf("offset %d: %w", m.Offset, err)
			}
			err = pgx.BeginFunc(procCtx, b.pool, func(tx pgx.Tx) error {
				c, err := store.Claim(procCtx, tx, inbox.Request{
					Token: tok, Fingerprint: inbox.Fingerprint(m.Value),
					Origin: inbox.Origin{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset},
				})
				if err != nil {
					return err
				}
				if c.Outcome != inbox.Fresh {
					return &correctnessError{fmt.Errorf("offset %d: token %v claimed as %v in a fresh inbox", m.Offset, tok, c.Outcome)}
				}
				return insertEffect(procCtx, tx, ins, tok, m)
			})
			if err != nil {
				return err
			}
			t2 := time.Now()
			if err := gen.CommitOffsets(map[string]map[int]int64{topic: {id: m.Offset + 1}}); err != nil {
				return fmt.Errorf("commit offsets: %w", err)
			}
			ph.fetch.Add(int64(t1.Sub(t0)))
			ph.db.Add(int64(t2.Sub(t1)))
			ph.offset.Add(int64(time.Since(t2)))
			ph.batches.Add(1)
			ph.msgs.Add(1)
			if m.Offset+1 >= limit {
				return idle()
			}
		}
	}
	r, err := b.measure(ctx, group, bl.topic, bl.naive, profile, func(ctx context.Context) error {
		return b.runGroup(ctx, group, bl.topic, part)
	})
	r.phases = ph.String()
	if err != nil {
		return r, err
	}
	return r, b.verify(ctx, schema, effects, bl.naive)
}

// ---- a kafka-go group runner shaped like consumer.Run and partition.run ----

type partitionFunc func(fetchCtx, procCtx context.Context, gen *kafka.Generation, r *kafka.Reader, topic string, id int) error

// runGroup joins group with the consumer's settings and runs part for every
// assigned partition until ctx ends or part fails. part must return only when
// fetchCtx ends or on failure.
func (b *bench) runGroup(ctx context.Context, group, topic string, part partitionFunc) error {
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                group,
		Brokers:           b.brokers,
		Dialer:            kafka.DefaultDialer,
		Topics:            []string{topic},
		SessionTimeout:    sessionTimeout,
		HeartbeatInterval: heartbeatInterval,
		RebalanceTimeout:  sessionTimeout,
		JoinGroupBackoff:  retryInitial * 10,
		StartOffset:       kafka.FirstOffset,
		ErrorLogger:       kafka.LoggerFunc(func(string, ...any) {}),
	})
	if err != nil {
		return err
	}
	for {
		gen, err := cg.Next(ctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			log.Printf("%s: joining consumer group failed; retrying: %v", group, err)
			continue
		}
		for t, as := range gen.Assignments {
			for _, a := range as {
				gen.Start(func(genCtx context.Context) {
					fetchCtx, cancel := context.WithCancel(genCtx)
					defer cancel()
					defer context.AfterFunc(ctx, cancel)()
					r := kafka.NewReader(kafka.ReaderConfig{
						Brokers:       b.brokers,
						Topic:         t,
						Partition:     a.ID,
						Dialer:        kafka.DefaultDialer,
						MinBytes:      readerMinBytes,
						MaxBytes:      readerMaxBytes,
						MaxWait:       *fetchWait,
						QueueCapacity: *batchSize,
						ErrorLogger:   kafka.LoggerFunc(func(string, ...any) {}),
					})
					defer r.Close()
					if err := r.SetOffset(a.Offset); err != nil {
						fail(fmt.Errorf("partition %d: seek %d: %w", a.ID, a.Offset, err))
						return
					}
					// An error after the generation ended (a rebalance) is
					// not a failure: the next generation redoes the work.
					if err := part(fetchCtx, genCtx, gen, r, t, a.ID); err != nil && fetchCtx.Err() == nil && genCtx.Err() == nil {
						fail(fmt.Errorf("partition %d: %w", a.ID, err))
					}
				})
			}
		}
	}
	_ = cg.Close()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// ---- measuring ----

// measure starts run, waits until group's committed offsets of topic reach
// targets on every partition, stops run and waits for it to return.
func (b *bench) measure(ctx context.Context, group, topic string, targets map[int]int64, profile bool, run func(context.Context) error) (result, error) {
	if err := b.checkpoint(ctx); err != nil {
		return result{}, err
	}
	runtime.GC()
	debug.FreeOSMemory() // so that the peak RSS is this run's
	resetPeakRSS()

	var peak atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if v := procStatus("VmRSS"); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stopSampling:
				return
			case <-t.C:
			}
		}
	}()
	defer func() { close(stopSampling); <-sampled }()

	if profile {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return result{}, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return result{}, err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
			log.Printf("CPU profile written to %s", *cpuProfile)
		}()
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	cpu0, host0 := procCPU(), benchkit.ReadCPU()
	start := time.Now()
	go func() { done <- run(runCtx) }()

	var r result
	r.msgs = sum(targets)
	var (
		lastSum  int64 = -1
		progress       = time.Now()
		tick           = time.NewTicker(20 * time.Millisecond)
		logEvery       = time.Now()
	)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err == nil {
				err = errors.New("no error")
			}
			return r, fmt.Errorf("run returned before finishing: %w", err)
		case <-tick.C:
		}
		got, err := kafkatest.Committed(ctx, group, topic, partitions)
		if err != nil {
			continue // the coordinator may not know the group yet
		}
		if len(got) > 0 && r.firstCommit == 0 {
			r.firstCommit = time.Since(start)
		}
		s, finished := int64(0), true
		for p, want := range targets {
			s += min(got[p], want)
			if got[p] < want {
				finished = false
			}
		}
		if finished {
			break
		}
		if s != lastSum {
			lastSum, progress = s, time.Now()
		} else if time.Since(progress) > 2*time.Minute {
			return r, fmt.Errorf("stalled: committed %d of %d for 2 minutes (%v of %v)", s, r.msgs, got, targets)
		}
		if time.Since(logEvery) > 10*time.Second {
			logEvery = time.Now()
			log.Printf("  %s: committed %d of %d", group, s, r.msgs)
		}
	}
	r.elapsed = time.Since(start)
	r.goCPU = (procCPU() - cpu0).Seconds() / r.elapsed.Seconds()
	r.hostBusy = host0.BusySince()
	r.peakRSS = max(peak.Load(), procStatus("VmHWM"))
	cancel()
	select {
	case err := <-done:
		if err != nil {
			return r, fmt.Errorf("run: %w", err)
		}
	case <-time.After(60 * time.Second):
		return r, errors.New("run did not return within 60s of cancel")
	}
	return r, nil
}

func (b *bench) checkpoint(ctx context.Context) error {
	if _, err := b.pool.Exec(ctx, "CHECKPOINT"); err != nil {
		log.Printf("CHECKPOINT: %v (continuing without)", err)
	}
	return nil
}

// ---- the database side ----

// prepareSchema creates schema with an effects table, and the consumer's
// tables when cfg is not nil. It returns the quoted effects table.
func (b *bench) prepareSchema(ctx context.Context, schema string, cfg *consumer.Config) (string, error) {
	b.atEnd(func() { b.dropSchema(schema) })
	if cfg != nil {
		if err := consumer.Migrate(ctx, b.pool, *cfg); err != nil {
			return "", fmt.Errorf("migrate: %w", err)
		}
	}
	effects := pgx.Identifier{schema, "effects"}.Sanitize()
	_, err := b.pool.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize()+`;
		CREATE TABLE `+effects+` (
			id bigserial PRIMARY KEY, token text NOT NULL, key text NOT NULL, seq int NOT NULL,
			value text NOT NULL, kafka_partition int NOT NULL, kafka_offset bigint NOT NULL)`)
	return effects, err
}

func (b *bench) dropSchema(schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := b.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		log.Printf("drop schema %s: %v", schema, err)
	}
}

func insertSQL(effects string) string {
	return "INSERT INTO " + effects + " (token, key, seq, value, kafka_partition, kafka_offset) VALUES ($1, $2, $3, $4, $5, $6)"
}

// insertEffect is the per-message handler of every variant.
func insertEffect(ctx context.Context, tx pgx.Tx, sql string, tok inbox.Token, m kafka.Message) error {
	seq, err := parseSeq(m.Value)
	if err != nil {
		return consumer.Permanent(err)
	}
	_, err = tx.Exec(ctx, sql, tok.String(), string(m.Key), seq, string(m.Value), m.Partition, m.Offset)
	return err
}

func parseSeq(v []byte) (int, error) {
	i := bytes.IndexByte(v, '|')
	if i < 0 {
		return 0, fmt.Errorf("value %.20q has no sequence number", v)
	}
	return strconv.Atoi(string(v[:i]))
}

// verify fails unless the effects are exactly one per message of offsets
// [0, targets[p]) of each partition, with each key's sequence numbers
// increasing by one in insertion order, and nothing was dead-lettered.
func (b *bench) verify(ctx context.Context, schema, effects string, targets map[int]int64) error {
	if err := b.check(ctx, schema, effects, targets); err != nil {
		var ce *correctnessError
		if errors.As(err, &ce) {
			return err
		}
		return fmt.Errorf("verify: %w", err) // a failed query, not a failed check
	}
	return nil
}

func (b *bench) check(ctx context.Context, schema, effects string, targets map[int]int64) error {
	bad := func(format string, args ...any) error { return &correctnessError{fmt.Errorf(format, args...)} }
	want := sum(targets)
	var total, distinct int64
	if err := b.pool.QueryRow(ctx, "SELECT count(*), count(DISTINCT token) FROM "+effects).Scan(&total, &distinct); err != nil {
		return err
	}
	if total != want || distinct != want {
		return bad("effects: %d rows for %d distinct tokens, want exactly %d of each (duplicated: %d, lost: %d)",
			total, distinct, want, total-distinct, want-distinct)
	}
	var backwards, gaps, badStart int64
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE step <= 0), count(*) FILTER (WHERE step > 1),
			count(*) FILTER (WHERE step IS NULL AND seq <> 0)
		FROM (SELECT seq, seq - lag(seq) OVER (PARTITION BY key ORDER BY id) AS step FROM `+effects+`) s`).Scan(&backwards, &gaps, &badStart); err != nil {
		return err
	}
	if backwards != 0 || gaps != 0 || badStart != 0 {
		return bad("per-key order broken: %d effects out of order, %d gaps, %d keys not starting at 0", backwards, gaps, badStart)
	}
	rows, err := b.pool.Query(ctx, "SELECT kafka_partition, count(*), min(kafka_offset), max(kafka_offset) FROM "+effects+" GROUP BY 1")
	if err != nil {
		return err
	}
	var p int
	var n, lo, hi int64
	seen := map[int]int64{}
	_, err = pgx.ForEachRow(rows, []any{&p, &n, &lo, &hi}, func() error {
		if n != targets[p] || lo != 0 || hi != targets[p]-1 {
			return bad("partition %d: %d effects for offsets %d..%d, want %d for 0..%d", p, n, lo, hi, targets[p], targets[p]-1)
		}
		seen[p] = n
		return nil
	})
	if err != nil {
		return err
	}
	for p, t := range targets {
		if t > 0 && seen[p] != t {
			return bad("partition %d: no effects, want %d", p, t)
		}
	}
	var dlExists bool
	dl := pgx.Identifier{schema, consumer.DeadLetterTableDefault}.Sanitize()
	if err := b.pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", dl).Scan(&dlExists); err != nil {
		return err
	}
	if dlExists {
		var dead int64
		if err := b.pool.QueryRow(ctx, "SELECT count(*) FROM "+dl).Scan(&dead); err != nil {
			return err
		}
		if dead != 0 {
			return bad("%d messages dead-lettered", dead)
		}
	}
	return nil
}

// ---- the Kafka side ----

// produceBacklog creates a topic and writes n messages to it. Message i has
// key "key-<i mod keys>", a value starting with its per-key sequence number
// i / keys, and a fresh UUIDv7 in the Idempotency-Key header. Messages are
// generated chunk by chunk, so producing does not hold the backlog in memory.
func (b *bench) produceBacklog(ctx context.Context, n, naive int) (backlog, error) {
	bl := backlog{topic: "bench-consumer-" + strconv.Itoa(n) + "-" + randomSuffix(), n: n, naive: map[int]int64{}}
	if err := b.createTopic(ctx, bl.topic); err != nil {
		return bl, err
	}
	b.atEnd(func() { b.deleteTopic(bl.topic) })
	runtime.GC()
	debug.FreeOSMemory()
	resetPeakRSS()
	start := time.Now()
	transport := &kafka.Transport{}
	defer transport.CloseIdleConnections()
	w := &kafka.Writer{
		Addr:         kafka.TCP(b.brokers...),
		Transport:    transport,
		Topic:        bl.topic,
		Balancer:     &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		BatchSize:    2000,
		BatchBytes:   4 << 20,
		BatchTimeout: time.Millisecond,
		Async:        false,
	}
	defer w.Close()
	var balancer kafka.Murmur2Balancer // to know where the first naive messages go
	const chunk = 10_000
	msgs := make([]kafka.Message, 0, chunk)
	pad := strings.Repeat("abcdefghijklmnopqrstuvwxyz0123456789", *size/36+1)
	for i := range n {
		k := i % *keys
		v := strconv.Itoa(i / *keys) + "|"
		m := kafka.Message{
			Key:     []byte("key-" + strconv.Itoa(k)),
			Value:   []byte(v + pad[:max(0, *size-len(v))]),
			Headers: []kafka.Header{{Key: exactly.Header, Value: []byte(uuid.Must(uuid.NewV7()).String())}},
		}
		if i < naive {
			bl.naive[balancer.Balance(m, 0, 1, 2, 3)]++
		}
		msgs = append(msgs, m)
		if len(msgs) == chunk || i == n-1 {
			if err := w.WriteMessages(ctx, msgs...); err != nil {
				return bl, fmt.Errorf("produce: %w", err)
			}
			msgs = msgs[:0]
		}
		if (i+1)%200_000 == 0 && i+1 < n {
			log.Printf("  produced %d of %d", i+1, n)
		}
	}
	ends, err := b.endOffsets(ctx, bl.topic)
	if err != nil {
		return bl, err
	}
	bl.ends = ends
	if got := bl.size(); got != int64(n) {
		return bl, fmt.Errorf("topic %s holds %d messages after producing %d", bl.topic, got, n)
	}
	log.Printf("produced %d messages to %s in %v (%.0f msgs/s, peak rss %d MB); end offsets %v", n, bl.topic,
		time.Since(start).Round(time.Millisecond), float64(n)/time.Since(start).Seconds(), procStatus("VmHWM")>>20, bl.ends)
	return bl, nil
}

func (b *bench) endOffsets(ctx context.Context, topic string) (map[int]int64, error) {
	reqs := make([]kafka.OffsetRequest, partitions)
	for p := range reqs {
		reqs[p] = kafka.LastOffsetOf(p)
	}
	resp, err := b.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, err
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return nil, p.Error
		}
		out[p.Partition] = p.LastOffset
	}
	if len(out) != partitions {
		return nil, fmt.Errorf("end offsets of %s: %d partitions, want %d", topic, len(out), partitions)
	}
	return out, nil
}

// createTopic creates topic and waits until every partition has a leader.
func (b *bench) createTopic(ctx context.Context, topic string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return kafkatest.CreateTopic(ctx, topic, partitions)
}

func (b *bench) deleteTopic(topic string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafkatest.DeleteTopic(ctx, topic); err != nil {
		log.Printf("%v", err)
	}
}

// ---- process and host statistics ----

// procStatus returns a /proc/self/status field in bytes (0 if unknown).
func procStatus(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		name, rest, ok := strings.Cut(s.Text(), ":")
		if !ok || name != field {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return 0
		}
		return kb << 10
	}
	return 0
}

// peakBeforeReset is the process's peak RSS before the last resetPeakRSS.
var peakBeforeReset int64

// resetPeakRSS resets VmHWM to the current RSS (Linux clear_refs 5), so
// that VmHWM read later is the peak since this call.
func resetPeakRSS() {
	peakBeforeReset = max(peakBeforeReset, procStatus("VmHWM"))
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		log.Printf("cannot reset VmHWM (%v); per-run peaks are sampled only", err)
	}
}

// processPeakRSS is the process's peak RSS since it started.
func processPeakRSS() int64 { return max(peakBeforeReset, procStatus("VmHWM")) }

// procCPU returns this process's user plus system CPU time.
func procCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ---- helpers ----

func sum(m map[int]int64) int64 {
	var s int64
	for _, v := range m {
		s += v
	}
	return s
}

func medianResult(rs []result) result {
	if len(rs) == 0 {
		return result{elapsed: 1}
	}
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b result) int { return cmp.Compare(a.rate(), b.rate()) })
	return s[len(s)/2]
}

func maxRSS(rs []result) int64 {
	var m int64
	for _, r := range rs {
		m = max(m, r.peakRSS)
	}
	return m
}

func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
