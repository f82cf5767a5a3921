// Command outbox measures the outbox and its relay (make bench-outbox).
//
// In one run, against the local Postgres and Kafka:
//
//  1. Relay throughput: a backlog of -messages messages (-value bytes, -keys
//     keys) is enqueued with the relay stopped, in transactions of 1000; then
//     one relay with the default safe writer (acks from all in-sync
//     replicas) starts, and the time until the outbox is empty gives msgs/s.
//     The topic must then hold every message.
//  2. Latency at a steady -rate msgs/s for -latency-duration, one message per
//     transaction, with the default RelayConfig (notifications on): a
//     consumer reads the topic, and latency is read time minus commit time.
//     That is commit -> Kafka ack plus the consumer's fetch: an upper bound
//     on commit -> ack.
//  3. The same relay as a plain polling relay, what common peers default
//     to: Config.NotifyWindow = -1, RelayConfig.PollInterval = 1s and
//     Linger = -1 (no fast polling after finding rows). Informational runs
//     follow: the Kafka path alone (the relay's kind of writer, no outbox),
//     and both modes again at a sparse -sparse-rate.
//  4. Business transactions per second of -writers goroutines, each
//     transaction inserting an order and enqueueing one message, with the
//     wake-up notification coalesced (NotifyWindow 10ms, the default), off
//     (-1), and sent by nearly every transaction (1ns). A relay drains the
//     outbox meanwhile. Variants are interleaved for -rounds rounds; the
//     median is reported.
//
// Other work on the machine skews every number: the summary shows the load
// average, and the latency runs count the other sessions' write
// transactions, each of which holds back the relay while it runs. The last
// line of the output sums up the run.
package main

import (
	"cmp"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/internal/bench/benchkit"
	"github.com/exactlyhq/exactly/internal/kafkaprobe"
	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/outbox"
)

const (
	schema     = "bench_outbox"
	partitions = 4
	appName    = "exactly-bench-outbox"
)

var (
	nMessages = flag.Int("messages", 200_000, "backlog the relay drains in the throughput run")
	nKeys     = flag.Int("keys", 1000, "distinct message keys")
	valueSize = flag.Int("value", 256, "message value bytes")
	enqBatch  = flag.Int("enqueue-batch", 1000, "messages per transaction when building the backlog")
	rate      = flag.Int("rate", 1000, "messages per second offered in the latency runs")
	latDur    = flag.Duration("latency-duration", 20*time.Second, "length of each latency run (after the warm-up)")
	// With MinBytes 1 the broker answers a fetch as soon as a message is
	// there, so MaxWait costs no latency. But kafka-go sets the connection's
	// read deadline to MaxWait and asks the broker to wait 3/4 of it: at
	// 10ms any hiccup over 2.5ms is an i/o timeout, after which the reader
	// reconnects and backs off 100ms, which put p99 near 90ms in every mode,
	// Kafka alone included.
	readerWait = flag.Duration("reader-maxwait", 250*time.Millisecond, "the latency consumer's ReaderConfig.MaxWait")
	lowRate    = flag.Int("sparse-rate", 10, "messages per second of the informational sparse-traffic latency runs (0 skips them)")
	lowDur     = flag.Duration("sparse-duration", 30*time.Second, "length of each sparse-traffic latency run")
	baseDur    = flag.Duration("kafka-only-duration", 10*time.Second, "length of the informational latency run without the outbox (0 skips it)")
	latWarmup  = flag.Duration("latency-warmup", 2*time.Second, "leading part of each latency run left out of the percentiles")
	committers = flag.Int("committers", 4, "goroutines committing the ticker's transactions in the latency runs, so one slow commit does not lower the offered rate")
	nWriters   = flag.Int("writers", 8, "writer goroutines in the business-transaction runs")
	wDur       = flag.Duration("writers-duration", 10*time.Second, "length of each business-transaction measurement")
	rounds     = flag.Int("rounds", 3, "business-transaction measurements per variant (median reported)")
	cpuProfile = flag.String("cpuprofile", "", "write a CPU profile of this process (benchmark and relay) to this file")
)

var (
	pool    *pgxpool.Pool
	brokers = kafkatest.Brokers()
	// quiet is the relays' logger: warnings and errors only.
	quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	cleanupMu sync.Mutex
	cleanups  []func()
)

// atCleanup registers f to run at exit, last registered first.
func atCleanup(f func()) {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	cleanups = append(cleanups, f)
}

func cleanup() {
	cleanupMu.Lock()
	fs := cleanups
	cleanups = nil
	cleanupMu.Unlock()
	for _, f := range slices.Backward(fs) {
		f()
	}
}

// fatalf cleans up (drops the schema, deletes the topics), then exits.
func fatalf(format string, args ...any) {
	log.Printf("FATAL: "+format, args...)
	cleanup()
	os.Exit(1)
}

func main() {
	flag.Parse()
	if *nMessages < 1 || *rate < 1 || *nKeys < 1 || *valueSize < 8 || *enqBatch < 1 || *enqBatch > outbox.MaxEnqueue || *rounds < 1 || *nWriters < 1 || *committers < 1 {
		log.Fatal("bad flags: need messages, rate, keys, rounds, writers, committers >= 1, value >= 8, enqueue-batch in 1..10000")
	}
	start := time.Now()
	ctx := context.Background()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		atCleanup(func() { pprof.StopCPUProfile(); _ = f.Close() })
	}

	dsn := cmp.Or(os.Getenv("DATABASE_URL"), "postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable")
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		log.Fatalf("DATABASE_URL: %v", err)
	}
	// Relays hold a connection per shard; writers and committers one each.
	pcfg.MaxConns = int32(max(32, *nWriters+*committers+2*partitions+4))
	// Lets foreignWriters tell this process's sessions (relays included: the
	// LISTEN connection copies this config) from others.
	pcfg.ConnConfig.RuntimeParams["application_name"] = appName
	if pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		log.Fatalf("connect: %v", err)
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		log.Fatalf("Postgres unreachable at DATABASE_URL (run `make services`): %v", err)
	}
	if err := kafkaprobe.Reachable(ctx, nil, brokers); err != nil {
		log.Fatalf("%v (run `make services`)", err)
	}
	loadStart := loadavg()
	settings := pgSettings(ctx)
	for _, s := range settings {
		log.Printf("postgres %s", s)
	}

	if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
		log.Fatal(err)
	}
	atCleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(c, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
			log.Printf("cleanup: drop schema %s: %v", schema, err)
		}
	})

	tput := throughput(ctx)

	notifyCfg := outbox.Config{Schema: schema, Table: "latency_notify"}
	notify := latency(ctx, "notify", &notifyCfg, outbox.RelayConfig{Outbox: notifyCfg}, *rate, *latDur)
	pollCfg := outbox.Config{Schema: schema, Table: "latency_polling", NotifyWindow: -1}
	polling := latency(ctx, "polling", &pollCfg, outbox.RelayConfig{Outbox: pollCfg, PollInterval: time.Second, Linger: -1}, *rate, *latDur)
	var kafkaOnly *latResult
	if *baseDur > 0 {
		l := latency(ctx, "kafka-only", nil, outbox.RelayConfig{}, *rate, *baseDur)
		kafkaOnly = &l
	}
	// The same two at a sparse rate.
	var sparse []latResult
	if *lowRate > 0 {
		c := outbox.Config{Schema: schema, Table: "sparse_notify"}
		sparse = append(sparse, latency(ctx, "sparse-notify", &c, outbox.RelayConfig{Outbox: c}, *lowRate, *lowDur))
		c = outbox.Config{Schema: schema, Table: "sparse_polling", NotifyWindow: -1}
		sparse = append(sparse, latency(ctx, "sparse-polling", &c, outbox.RelayConfig{Outbox: c, PollInterval: time.Second, Linger: -1}, *lowRate, *lowDur))
	}

	wr := writers(ctx)

	cleanup()

	// Summary.
	def := outbox.NewWriter(brokers...)
	fmt.Println()
	fmt.Println("settings")
	for _, s := range settings {
		fmt.Printf("  postgres %s\n", s)
	}
	fmt.Printf("  machine  %d cores; load average at start %s, at end %s\n", runtime.NumCPU(), loadStart, loadavg())
	fmt.Printf("  kafka    %v, topics of %d partitions, replication factor 1 (acks=all waits for the leader alone)\n", brokers, partitions)
	fmt.Printf("  writer   outbox.NewWriter: RequiredAcks=%v BatchTimeout=%v BatchSize=%d MaxAttempts=%d\n",
		def.RequiredAcks, def.BatchTimeout, def.BatchSize, def.MaxAttempts)
	fmt.Printf("  relay    one relay, default RelayConfig: BatchSize=%d PollInterval=%v Linger=%v LingerPoll=%v; Shards=%d\n",
		outbox.BatchSizeDefault, outbox.PollIntervalDefault, outbox.LingerDefault, outbox.LingerPollDefault, outbox.ShardsDefault)
	fmt.Printf("  outbox   NotifyWindow default %v; messages of %d bytes, %d keys\n", outbox.NotifyWindowDefault, *valueSize, *nKeys)
	fmt.Println()
	fmt.Println("relay throughput (backlog drained by one relay)")
	fmt.Printf("  %d msgs enqueued in txs of %d at %.0f msgs/s; drained in %v from relay start = %.0f msgs/s (machine CPU %.0f%%)\n",
		*nMessages, *enqBatch, tput.enqRate, tput.drain.Round(time.Millisecond), tput.rate, tput.cpu)
	fmt.Printf("  first ack %v after relay start (preflight, lock jitter up to 250ms); from first ack %.0f msgs/s; topic holds %d (%d repeats)\n",
		tput.firstAck.Round(time.Millisecond), float64(*nMessages)/(tput.drain-tput.firstAck).Seconds(), tput.inTopic, tput.inTopic-int64(*nMessages))
	fmt.Printf("  outbox.Shards (the relay's backlog gauges, run at each metrics collection) on the %d-row backlog: %v\n", *nMessages, tput.shardsQuery.Round(time.Millisecond))
	fmt.Println()
	fmt.Printf("latency commit -> consumer read (upper bound on commit -> ack), %d msgs/s offered, 1 msg/tx, %v after %v warm-up, reader MaxWait %v\n", *rate, *latDur, *latWarmup, *readerWait)
	fmt.Printf("  %-44s %8s %8s %8s %8s %9s %9s %6s\n", "mode", "p50_ms", "p90_ms", "p99_ms", "max_ms", "samples", "tx/s", "cpu%")
	lats := []latResult{notify, polling}
	if kafkaOnly != nil {
		lats = append(lats, *kafkaOnly)
	}
	for _, l := range lats {
		fmt.Printf("  %-44s %8.2f %8.2f %8.2f %8.2f %9d %9.0f %6.0f\n", l.desc, l.p50, l.p90, l.p99, l.max, l.samples, l.achieved, l.cpu)
	}
	for _, l := range []latResult{notify, polling} {
		fmt.Printf("  %s: relay index scans (fetch + delete) %.0f/s; notifications %.0f/s; other processes' write transactions seen: %d, longest >= %v\n",
			l.name, l.scansPerS, l.notifiesPerS, l.foreign, l.foreignMax.Round(time.Millisecond))
	}
	if kafkaOnly != nil {
		fmt.Printf("  kafka-only: WriteMessages call -> return (produce ack) p50 %.2fms p99 %.2fms; the rest is the consumer's fetch\n", kafkaOnly.ackP50, kafkaOnly.ackP99)
	}
	if len(sparse) == 2 {
		fmt.Println()
		fmt.Printf("informational: the same at a sparse %d msgs/s, %v (per shard, gaps outlast the relay's %v Linger)\n", *lowRate, *lowDur, outbox.LingerDefault)
		for _, l := range sparse {
			fmt.Printf("  %-44s %8.2f %8.2f %8.2f %8.2f %9d %9.1f %6.0f\n", l.desc, l.p50, l.p90, l.p99, l.max, l.samples, l.achieved, l.cpu)
		}
		fmt.Printf("  sparse p99 notify/polling = %.3f\n", sparse[0].p99/sparse[1].p99)
	}
	fmt.Println()
	fmt.Printf("business transactions (insert an order + EnqueueTx 1 msg), %d writers, %v x %d rounds, median; relay running\n", *nWriters, *wDur, *rounds)
	for _, v := range wr.variants {
		fmt.Printf("  %-34s %8.0f tx/s   rounds %s\n", v.desc, v.median, fmtRates(v.rates))
	}
	wakeRatio := wr.byName("wake").median / wr.byName("nowake").median
	fmt.Printf("  writers_wake/nowake=%.3f  writers_each/nowake=%.3f (informational: one NOTIFY per transaction)\n",
		wakeRatio, wr.byName("each").median/wr.byName("nowake").median)
	fmt.Println()
	fmt.Println("targets (never faked): msgs/s >= 20000; p50 <= 5ms; p99 <= 25ms; p99_vs_polling <= 0.05; writers_wake/nowake >= 0.95")
	fmt.Printf("  msgs/s %s, p50 %s, p99 %s, p99_vs_polling %s, writers_wake/nowake %s\n",
		met(tput.rate >= 20000), met(notify.p50 <= 5), met(notify.p99 <= 25), met(notify.p99/polling.p99 <= 0.05), met(wakeRatio >= 0.95))
	fmt.Printf("  total run time %v\n", time.Since(start).Round(time.Second))
	fmt.Printf("outbox: msgs_per_s=%.0f p50_ms=%.2f p99_ms=%.2f p99_vs_polling=%.3f writers_wake/nowake=%.3f\n",
		tput.rate, notify.p50, notify.p99, notify.p99/polling.p99, wakeRatio)
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func fmtRates(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.FormatFloat(x, 'f', 0, 64)
	}
	return strings.Join(s, " ")
}

// pgSettings returns the Postgres settings that bear on commit cost.
func pgSettings(ctx context.Context) []string {
	rows, err := pool.Query(ctx, `SELECT name, setting, coalesce(unit, '') FROM pg_settings
		WHERE name IN ('server_version', 'synchronous_commit', 'fsync', 'wal_sync_method', 'commit_delay', 'full_page_writes',
		               'wal_compression', 'shared_buffers', 'max_wal_size', 'checkpoint_timeout', 'autovacuum_naptime')
		ORDER BY name`)
	if err != nil {
		log.Fatal(err)
	}
	var out []string
	var name, setting, unit string
	_, err = pgx.ForEachRow(rows, []any{&name, &setting, &unit}, func() error {
		out = append(out, fmt.Sprintf("%s = %s%s", name, setting, unit))
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	return out
}

// ---- Kafka helpers ----

// createTopic creates a topic of its own for a run, deleted at exit, and
// waits until every partition has a leader.
func createTopic(ctx context.Context, purpose string) string {
	name := fmt.Sprintf("bench-outbox-%s-%08x", purpose, rand.Uint32())
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := kafkatest.CreateTopic(cctx, name, partitions); err != nil {
		fatalf("%v", err)
	}
	atCleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := kafkatest.DeleteTopic(c, name); err != nil {
			log.Printf("cleanup: %v", err)
		}
	})
	return name
}

// endOffsets returns the next offset of each partition of topic. It retries
// for a while: right after creation a partition may not answer yet.
func endOffsets(ctx context.Context, topic string) []int64 {
	transport := &kafka.Transport{}
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: transport}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for p := range partitions {
		req.Topics[topic] = append(req.Topics[topic], kafka.LastOffsetOf(p))
	}
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var resp *kafka.ListOffsetsResponse
		if resp, err = client.ListOffsets(ctx, req); err != nil {
			continue
		}
		out := make([]int64, partitions)
		got := 0
		for _, p := range resp.Topics[topic] {
			if p.Error != nil {
				err = fmt.Errorf("partition %d: %w", p.Partition, p.Error)
				break
			}
			out[p.Partition] = p.LastOffset
			got++
		}
		if got == partitions {
			return out
		}
		if err == nil {
			err = fmt.Errorf("%d partitions answered, want %d", got, partitions)
		}
	}
	fatalf("list offsets of %s: %v", topic, err)
	return nil
}

// ---- Postgres and machine helpers ----

// countNotifications listens on the outbox's channel, as the relay does, and
// returns a function that stops listening and returns how many
// notifications arrived.
func countNotifications(ctx context.Context, cfg outbox.Config) func() int64 {
	conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig.Copy())
	if err != nil {
		fatalf("listen: %v", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{cfg.Channel()}.Sanitize()); err != nil {
		fatalf("listen: %v", err)
	}
	lctx, cancel := context.WithCancel(ctx)
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := conn.WaitForNotification(lctx); err != nil {
				return
			}
			n.Add(1)
		}
	}()
	return func() int64 {
		cancel()
		<-done
		_ = conn.Close(context.Background())
		return n.Load()
	}
}

// newOutbox migrates the table cfg names and returns its Outbox.
func newOutbox(ctx context.Context, cfg outbox.Config) *outbox.Outbox {
	if err := outbox.Migrate(ctx, pool, cfg); err != nil {
		fatalf("migrate %s.%s: %v", cfg.Schema, cfg.Table, err)
	}
	ob, err := outbox.New(cfg)
	if err != nil {
		fatalf("outbox.New: %v", err)
	}
	return ob
}

// startRelay runs one relay until the returned stop is called.
func startRelay(ctx context.Context, rcfg outbox.RelayConfig) (stop func()) {
	rcfg.Brokers = brokers
	rcfg.Logger = quiet
	r, err := outbox.NewRelay(pool, rcfg)
	if err != nil {
		fatalf("NewRelay: %v", err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				fatalf("relay: %v", err)
			}
		})
	}
	atCleanup(stop)
	return stop
}

func table(cfg outbox.Config) string { return pgx.Identifier{cfg.Schema, cfg.Table}.Sanitize() }

// pending reports whether the outbox holds an unpublished row, through the
// relay's own partial index (cheap, unlike count(*) over a half-deleted heap).
func pending(ctx context.Context, cfg outbox.Config) bool {
	var some bool
	if err := pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+table(cfg)+" WHERE published_at IS NULL)").Scan(&some); err != nil {
		fatalf("poll %s: %v", table(cfg), err)
	}
	return some
}

func count(ctx context.Context, cfg outbox.Config) int64 {
	var n int64
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+table(cfg)).Scan(&n); err != nil {
		fatalf("count %s: %v", table(cfg), err)
	}
	return n
}

// waitEmpty waits until the relay published every row, or fails.
func waitEmpty(ctx context.Context, cfg outbox.Config, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for pending(ctx, cfg) {
		if time.Now().After(deadline) {
			fatalf("outbox %s still holds %d rows after %v", table(cfg), count(ctx, cfg), timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func checkpoint(ctx context.Context) {
	if _, err := pool.Exec(ctx, "CHECKPOINT"); err != nil {
		log.Printf("CHECKPOINT: %v (continuing without)", err)
	}
}

// indexScans is the cumulative count of index scans on the outbox table.
// The relay's fetch and delete are one index scan each.
func indexScans(ctx context.Context, cfg outbox.Config) int64 {
	var n int64
	pool.Reset() // idle connections flush their statistics on close
	time.Sleep(600 * time.Millisecond)
	if _, err := pool.Exec(ctx, "SELECT pg_stat_clear_snapshot()"); err != nil {
		fatalf("stats: %v", err)
	}
	if err := pool.QueryRow(ctx, "SELECT coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2",
		cfg.Schema, cfg.Table).Scan(&n); err != nil {
		fatalf("stats: %v", err)
	}
	return n
}

// foreignWriters samples, every 50ms until the returned function is called,
// the transactions of other processes that hold a transaction id: while one
// runs, the relay publishes no row committed after it started (fetch.sql),
// in any database of the cluster. It returns how many it saw and the
// longest age seen.
func foreignWriters(ctx context.Context) func() (int, time.Duration) {
	sctx, cancel := context.WithCancel(ctx)
	seen := map[string]bool{}
	var longest time.Duration
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			rows, err := pool.Query(sctx, `SELECT pid::text || '/' || backend_xid::text, extract(epoch FROM clock_timestamp() - xact_start)
				FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND application_name <> $1`, appName)
			if err == nil {
				var id string
				var age float64
				_, _ = pgx.ForEachRow(rows, []any{&id, &age}, func() error {
					seen[id] = true
					longest = max(longest, time.Duration(age*float64(time.Second)))
					return nil
				})
			}
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() (int, time.Duration) {
		cancel()
		<-done
		return len(seen), longest
	}
}

// loadavg returns the 1, 5 and 15-minute load averages: other work on the
// machine skews every number here.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func makeValue(seq int) []byte {
	v := make([]byte, *valueSize)
	binary.BigEndian.PutUint64(v, uint64(seq))
	for i := 8; i < len(v); i++ {
		v[i] = 'a' + byte(i%26)
	}
	return v
}

func key(seq int) []byte { return fmt.Appendf(nil, "key-%05d", seq%*nKeys) }

// ---- 1. Relay throughput ----

type tputResult struct {
	enqRate, rate, cpu float64
	drain, firstAck    time.Duration // from starting the relay
	shardsQuery        time.Duration // outbox.Shards on the full backlog
	inTopic            int64
}

func throughput(ctx context.Context) tputResult {
	topic := createTopic(ctx, "throughput")
	cfg := outbox.Config{Schema: schema, Table: "throughput"}
	ob := newOutbox(ctx, cfg)

	start := time.Now()
	for done := 0; done < *nMessages; done += *enqBatch {
		msgs := make([]outbox.Message, min(*enqBatch, *nMessages-done))
		for i := range msgs {
			msgs[i] = outbox.Message{Topic: topic, Key: key(done + i), Value: makeValue(done + i)}
		}
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := ob.EnqueueTx(ctx, tx, msgs...)
			return err
		})
		if err != nil {
			fatalf("enqueue backlog: %v", err)
		}
	}
	var res tputResult
	res.enqRate = float64(*nMessages) / time.Since(start).Seconds()
	log.Printf("throughput: enqueued %d messages at %.0f msgs/s", *nMessages, res.enqRate)
	// A backlog that built up during an outage has been vacuumed and
	// analyzed by autovacuum by the time the relay returns.
	if _, err := pool.Exec(ctx, "VACUUM ANALYZE "+table(cfg)); err != nil {
		fatalf("vacuum: %v", err)
	}
	// outbox.Shards backs the relay's backlog gauges: every relay runs it at
	// each metrics collection. Time it on the full backlog.
	t := time.Now()
	if _, err := outbox.Shards(ctx, pool, cfg); err != nil {
		fatalf("outbox.Shards: %v", err)
	}
	res.shardsQuery = time.Since(t)
	checkpoint(ctx)

	cpu := benchkit.ReadCPU()
	start = time.Now()
	stop := startRelay(ctx, outbox.RelayConfig{Outbox: cfg})
	lastLog := start
	for pending(ctx, cfg) {
		if res.firstAck == 0 && sum(endOffsets(ctx, topic)) > 0 {
			res.firstAck = time.Since(start)
		}
		if time.Since(start) > 10*time.Minute {
			fatalf("throughput: outbox not drained after 10 minutes: %d rows left", count(ctx, cfg))
		}
		if time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			log.Printf("throughput: %d rows left after %v", count(ctx, cfg), time.Since(start).Round(time.Second))
		}
		time.Sleep(10 * time.Millisecond)
	}
	res.drain = time.Since(start)
	res.cpu = 100 * cpu.BusySince()
	stop()
	if n := count(ctx, cfg); n != 0 {
		fatalf("throughput: %d rows left in the outbox after it reported none pending", n)
	}
	res.rate = float64(*nMessages) / res.drain.Seconds()
	res.inTopic = sum(endOffsets(ctx, topic))
	if res.inTopic < int64(*nMessages) {
		fatalf("throughput: topic %s holds %d messages, want at least %d: messages were LOST", topic, res.inTopic, *nMessages)
	}
	log.Printf("throughput: drained %d messages in %v: %.0f msgs/s; topic holds %d", *nMessages, res.drain.Round(time.Millisecond), res.rate, res.inTopic)
	return res
}

// ---- 2, 3. Latency ----

type latResult struct {
	name, desc                 string
	p50, p90, p99, max         float64 // ms
	ackP50, ackP99             float64 // ms, Kafka-only run: WriteMessages call -> return
	samples                    int
	achieved, cpu              float64
	scansPerS, notifiesPerS    float64
	committed, read, negatives int
	readerErrs                 int // errors the consumer's readers logged (each a reconnect)
	foreign                    int // other processes' transactions holding an xid during the run
	foreignMax                 time.Duration
}

// latency offers rate messages a second for warm-up + dur and measures,
// for each, the time from its commit to a consumer reading it. With cfg nil
// there is no outbox: messages go straight to the relay's kind of writer,
// timed from the WriteMessages call, which gives the floor the Kafka path
// alone sets.
func latency(ctx context.Context, name string, cfg *outbox.Config, rcfg outbox.RelayConfig, rate int, dur time.Duration) latResult {
	res := latResult{name: name}
	topic := createTopic(ctx, name)
	var (
		ob        *outbox.Outbox
		kw        *kafka.Writer
		scans0    int64
		stopRelay func()
		notifies  func() int64
	)
	relayStart := time.Now()
	if cfg != nil {
		poll := cmp.Or(rcfg.PollInterval, outbox.PollIntervalDefault)
		res.desc = fmt.Sprintf("%s (window %v, poll %v)", name, cmp.Or(cfg.NotifyWindow, outbox.NotifyWindowDefault), poll)
		if cfg.NotifyWindow < 0 {
			res.desc = fmt.Sprintf("%s (no NOTIFY, poll %v)", name, poll)
		}
		ob = newOutbox(ctx, *cfg)
		scans0 = indexScans(ctx, *cfg)
		relayStart = time.Now()
		stopRelay = startRelay(ctx, rcfg)
		notifies = countNotifications(ctx, *cfg)
		// Let the relay take its shards (first attempts spread over 250ms).
		time.Sleep(time.Second)
	} else {
		res.desc = name + " (NewWriter, no outbox; informational)"
		kw = outbox.NewWriter(brokers...)
		defer func() {
			_ = kw.Close()
			kw.Transport.(*kafka.Transport).CloseIdleConnections()
		}()
	}

	total := int(float64(rate) * (*latWarmup + dur).Seconds())
	commitAt := make([]atomic.Int64, total) // ns since t0, 0 = not committed
	readAt := make([]atomic.Int64, total)
	ackAt := make([]atomic.Int64, total) // Kafka-only run
	var nRead, readerErrs atomic.Int64
	t0 := time.Now() // times are ns since t0

	// Consumer: one reader per partition, from the end offsets.
	ends := endOffsets(ctx, topic)
	cctx, cancelRead := context.WithCancel(ctx)
	var rwg sync.WaitGroup
	var readers []*kafka.Reader
	for p := range partitions {
		rd := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MinBytes: 1, MaxBytes: 10 << 20, MaxWait: *readerWait,
			ErrorLogger: kafka.LoggerFunc(func(format string, args ...any) {
				if readerErrs.Add(1) <= 3 {
					log.Printf("latency %s: reader: "+format, append([]any{name}, args...)...)
				}
			})})
		if err := rd.SetOffset(ends[p]); err != nil {
			fatalf("reader: %v", err)
		}
		readers = append(readers, rd)
		rwg.Go(func() {
			for {
				m, err := rd.ReadMessage(cctx)
				now := int64(time.Since(t0))
				if err != nil {
					if cctx.Err() == nil {
						log.Printf("latency %s: read partition %d: %v", name, p, err)
					}
					return
				}
				seq := int(binary.BigEndian.Uint64(m.Value))
				if seq < 0 || seq >= total {
					log.Printf("latency %s: unexpected message seq %d", name, seq)
					continue
				}
				if readAt[seq].Load() == 0 {
					readAt[seq].Store(now)
					nRead.Add(1)
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond) // readers connect

	send := func(seq int) {
		msg := outbox.Message{Topic: topic, Key: key(seq), Value: makeValue(seq)}
		if kw != nil {
			commitAt[seq].Store(int64(time.Since(t0)))
			err := kw.WriteMessages(ctx, kafka.Message{Topic: msg.Topic, Key: msg.Key, Value: msg.Value})
			ackAt[seq].Store(int64(time.Since(t0)))
			if err != nil {
				fatalf("latency %s: produce: %v", name, err)
			}
			return
		}
		tx, err := pool.Begin(ctx)
		if err != nil {
			fatalf("latency %s: begin: %v", name, err)
		}
		_, err = ob.EnqueueTx(ctx, tx, msg)
		if err == nil {
			err = tx.Commit(ctx)
		}
		at := int64(time.Since(t0))
		if err != nil {
			_ = tx.Rollback(ctx)
			fatalf("latency %s: enqueue: %v", name, err)
		}
		commitAt[seq].Store(at)
	}

	// Writer: a ticker offers one transaction per 1/rate; committers run
	// them, so a slow commit does not delay the next one.
	cpu := benchkit.ReadCPU()
	foreign := foreignWriters(ctx)
	wStart := time.Now()
	warm := int64(time.Since(t0) + *latWarmup)
	jobs := make(chan int, total)
	var dropped int
	go func() {
		defer close(jobs)
		t := time.NewTicker(time.Second / time.Duration(rate))
		defer t.Stop()
		for seq := range total {
			<-t.C
			select {
			case jobs <- seq:
			default:
				dropped++
			}
		}
	}()
	var wwg sync.WaitGroup
	var committed atomic.Int64
	for range *committers {
		wwg.Go(func() {
			for seq := range jobs {
				send(seq)
				committed.Add(1)
			}
		})
	}
	wwg.Wait()
	elapsed := time.Since(wStart)
	res.cpu = 100 * cpu.BusySince()
	res.foreign, res.foreignMax = foreign()
	if res.foreign > 0 {
		log.Printf("latency %s: WARNING: %d transactions of other processes held a transaction id during the run, the longest for at least %v: they delay the relay (the machine is not quiet)",
			name, res.foreign, res.foreignMax.Round(time.Millisecond))
	}
	res.committed = int(committed.Load())
	res.achieved = float64(res.committed) / elapsed.Seconds()
	if dropped > 0 {
		log.Printf("latency %s: %d ticks dropped: the committers fell behind", name, dropped)
	}
	for deadline := time.Now().Add(30 * time.Second); nRead.Load() < committed.Load(); {
		if time.Now().After(deadline) {
			left := int64(-1)
			if cfg != nil {
				left = count(ctx, *cfg)
			}
			fatalf("latency %s: %d of %d committed messages read after 30s: messages LOST or stuck (outbox holds %d rows)",
				name, nRead.Load(), committed.Load(), left)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancelRead()
	for _, rd := range readers {
		_ = rd.Close()
	}
	rwg.Wait()
	if cfg != nil {
		res.notifiesPerS = float64(notifies()) / elapsed.Seconds()
		stopRelay()
		res.scansPerS = float64(indexScans(ctx, *cfg)-scans0) / time.Since(relayStart).Seconds()
	}

	var lat, ack []float64
	for seq := range total {
		c, r := commitAt[seq].Load(), readAt[seq].Load()
		if c == 0 || c < warm {
			continue
		}
		if r < c {
			res.negatives++ // read before the committer took the time
		}
		lat = append(lat, float64(r-c)/1e6)
		if a := ackAt[seq].Load(); a != 0 {
			ack = append(ack, float64(a-c)/1e6)
		}
	}
	res.read = int(nRead.Load())
	res.readerErrs = int(readerErrs.Load())
	if len(lat) == 0 {
		fatalf("latency %s: no samples", name)
	}
	slices.Sort(lat)
	slices.Sort(ack)
	res.samples = len(lat)
	res.p50, res.p90, res.p99, res.max = pct(lat, 0.50), pct(lat, 0.90), pct(lat, 0.99), lat[len(lat)-1]
	if len(ack) > 0 {
		res.ackP50, res.ackP99 = pct(ack, 0.50), pct(ack, 0.99)
	}
	log.Printf("latency %s: %d samples at %.0f tx/s: p50 %.2fms p90 %.2fms p99 %.2fms max %.2fms (%d read before the commit time was taken; %d reader errors)",
		name, res.samples, res.achieved, res.p50, res.p90, res.p99, res.max, res.negatives, res.readerErrs)
	return res
}

// pct returns the p-quantile of sorted xs.
func pct(xs []float64, p float64) float64 { return xs[min(len(xs)-1, int(p*float64(len(xs))))] }

// ---- 4. Business transactions ----

type writerVariant struct {
	name, desc string
	ob         *outbox.Outbox
	rates      []float64
	median     float64
}

type writersResult struct{ variants []*writerVariant }

func (w writersResult) byName(n string) *writerVariant {
	for _, v := range w.variants {
		if v.name == n {
			return v
		}
	}
	panic(n)
}

func writers(ctx context.Context) writersResult {
	topic := createTopic(ctx, "writers")
	cfg := outbox.Config{Schema: schema, Table: "writers"}
	newOutbox(ctx, cfg)
	if _, err := pool.Exec(ctx, `CREATE TABLE `+schema+`.orders (
		id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		customer int NOT NULL,
		amount numeric(12, 2) NOT NULL,
		created_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		fatalf("create orders: %v", err)
	}
	var res writersResult
	for _, v := range []struct {
		name, desc string
		window     time.Duration
	}{
		{"wake", "wake (NotifyWindow 10ms, default)", 0},
		{"nowake", "nowake (NotifyWindow -1, relay polls)", -1},
		{"each", "each (NotifyWindow 1ns: ~1 NOTIFY/tx)", time.Nanosecond},
	} {
		c := cfg
		c.NotifyWindow = v.window
		ob, err := outbox.New(c)
		if err != nil {
			fatalf("outbox.New: %v", err)
		}
		res.variants = append(res.variants, &writerVariant{name: v.name, desc: v.desc, ob: ob})
	}
	// One relay (default config) drains the table throughout, so the outbox
	// stays small; each measurement starts from an empty outbox.
	stopRelay := startRelay(ctx, outbox.RelayConfig{Outbox: cfg})
	time.Sleep(time.Second)
	var seq atomic.Int64
	for r := range *rounds {
		for k := range res.variants {
			v := res.variants[(k+r)%len(res.variants)]
			waitEmpty(ctx, cfg, time.Minute)
			checkpoint(ctx)
			wctx, cancel := context.WithTimeout(ctx, *wDur)
			var txs atomic.Int64
			var wg sync.WaitGroup
			start := time.Now()
			for w := range *nWriters {
				wg.Go(func() {
					for wctx.Err() == nil {
						s := int(seq.Add(1))
						err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
							if _, err := tx.Exec(ctx, "INSERT INTO "+schema+".orders (customer, amount) VALUES ($1, $2)", s%*nKeys, float64(s%10000)/100+float64(w)); err != nil {
								return err
							}
							_, err := v.ob.EnqueueTx(ctx, tx, outbox.Message{Topic: topic, Key: key(s), Value: makeValue(s)})
							return err
						})
						if err != nil {
							fatalf("writers %s: %v", v.name, err)
						}
						txs.Add(1)
					}
				})
			}
			wg.Wait()
			cancel()
			rate := float64(txs.Load()) / time.Since(start).Seconds()
			v.rates = append(v.rates, rate)
			log.Printf("writers round %d %-7s %8.0f tx/s", r+1, v.name, rate)
		}
	}
	waitEmpty(ctx, cfg, time.Minute)
	stopRelay()
	if inTopic := sum(endOffsets(ctx, topic)); inTopic < seq.Load() {
		fatalf("writers: topic holds %d messages, %d were committed: messages LOST", inTopic, seq.Load())
	}
	for _, v := range res.variants {
		v.median = benchkit.Median(v.rates)
	}
	return res
}

func sum(xs []int64) int64 {
	var n int64
	for _, x := range xs {
		n += x
	}
	return n
}
