// Command demo runs the whole order pipeline, hurts it, and proves that it
// applied every order exactly once. It is what `make demo` runs.
//
// It resets and sets up the schema and topics, starts orders-api, relay, two
// payments-workers and a shipping-worker as child processes (their logs go
// to files in a log directory it names), and runs loadgen for -duration:
// double clicks, client retries after timeouts and re-produced Kafka
// messages. Meanwhile, every 5 to 10 seconds, it SIGKILLs a payments-worker,
// the shipping-worker or the relay (each in turn, in a random order every
// round) and restarts it a second later. Then it
// waits for the pipeline to drain, runs verify, stops everything (SIGTERM,
// then SIGKILL after a timeout) and prints a summary.
//
// While it runs it serves the operator console (package console) on
// -console, 127.0.0.1:8081 by default, and prints its address: the consumer
// groups' members and lag, the outbox's shards and their relay, and any
// dead letter, refreshed every 2 seconds, kills included.
//
// It exits 1 if verify finds a duplicate or a lost order, 130 when
// interrupted. Interrupted or killed, it leaves no child running.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/exactlyhq/exactly/examples/orders/internal/shop"
)

func main() { os.Exit(run()) }

type options struct {
	duration     time.Duration
	bin          string
	addr         string
	console      string
	rate         float64
	logs         string
	killMin      time.Duration
	killMax      time.Duration
	restartAfter time.Duration
	drainTimeout time.Duration
	stopTimeout  time.Duration
	workers      int
}

type demo struct {
	opts options
	cfg  shop.Config
	pool *pgxpool.Pool
	sp   *spawner

	mu         sync.Mutex
	start      time.Time // of the load
	closing    bool
	procs      []*proc
	kills      map[string]int
	unexpected int
}

func run() int {
	var o options
	flag.DurationVar(&o.duration, "duration", 60*time.Second, "how long loadgen places orders")
	flag.StringVar(&o.bin, "bin", "", "directory with the built programs (default: this program's directory)")
	flag.StringVar(&o.addr, "addr", "127.0.0.1:8080", "orders-api listen address")
	flag.StringVar(&o.console, "console", "127.0.0.1:8081", "operator console listen address, loopback only (\"\": none)")
	flag.Float64Var(&o.rate, "rate", 100, "orders per second that loadgen places")
	flag.StringVar(&o.logs, "logs", "", "directory for the programs' logs (default: a new temporary directory)")
	flag.DurationVar(&o.killMin, "kill-min", 5*time.Second, "shortest time between two kills")
	flag.DurationVar(&o.killMax, "kill-max", 10*time.Second, "longest time between two kills")
	flag.DurationVar(&o.restartAfter, "restart-after", time.Second, "how long a killed program stays dead")
	flag.DurationVar(&o.drainTimeout, "drain-timeout", 2*time.Minute, "how long verify waits for the pipeline to drain")
	flag.DurationVar(&o.stopTimeout, "stop-timeout", 15*time.Second, "how long a program gets to stop after SIGTERM before SIGKILL")
	flag.IntVar(&o.workers, "payments-workers", 2, "payments-worker processes")
	flag.Parse()
	if o.killMin <= 0 || o.killMax < o.killMin || o.workers < 1 || o.duration <= 0 {
		fmt.Fprintln(os.Stderr, "demo: need 0 < -kill-min <= -kill-max, -payments-workers >= 1 and -duration > 0")
		return 2
	}
	cfg, err := shop.FromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 2
	}
	if o.bin == "" {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo: -bin:", err)
			return 2
		}
		o.bin = filepath.Dir(exe)
	}
	for _, name := range []string{"orders-api", "relay", "payments-worker", "shipping-worker", "loadgen", "verify"} {
		if _, err := os.Stat(filepath.Join(o.bin, name)); err != nil {
			fmt.Fprintf(os.Stderr, "demo: %s not found in -bin %s: build the programs first (in examples/: go build -o %s/ ./orders/cmd/...)\n", name, o.bin, o.bin)
			return 2
		}
	}
	if o.logs == "" {
		if o.logs, err = os.MkdirTemp("", "orders-demo-"); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			return 2
		}
	} else if err := os.MkdirAll(o.logs, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{opts: o, cfg: cfg, sp: newSpawner(), kills: map[string]int{}}
	go func() {
		// A second Ctrl-C while stopping kills everything at once.
		<-ctx.Done()
		stop()
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
		<-ch
		fmt.Println("demo: second interrupt: killing every program now")
		d.killAll()
		os.Exit(130)
	}()
	code := d.run(ctx)
	if ctx.Err() != nil {
		fmt.Println("demo: interrupted; every program it started has stopped")
		return 130
	}
	return code
}

func (d *demo) run(ctx context.Context) int {
	o, cfg := d.opts, d.cfg
	fmt.Printf("demo: schema %s, topics %s and %s, API on %s; logs in %s\n", cfg.Schema, cfg.OrdersPlaced(), cfg.PaymentsCaptured(), o.addr, o.logs)
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: cannot listen on %s (is an orders-api from an earlier run still up?): %v\n", o.addr, err)
		return 2
	}
	ln.Close()
	d.pool, err = shop.Connect(ctx, cfg.DatabaseURL, "shop-demo", 4)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 2
	}
	defer d.pool.Close()
	fmt.Printf("demo: reset (drop schema %s, delete its topics and groups), then setup (tables, inbox, dead letters, outbox, topics with %d partitions)\n", cfg.Schema, shop.Partitions)
	if err := cfg.Reset(ctx, d.pool, cfg.Kafka); err != nil {
		fmt.Fprintln(os.Stderr, "demo: reset:", err)
		return 2
	}
	if err := cfg.Setup(ctx, d.pool, cfg.Kafka); err != nil {
		fmt.Fprintln(os.Stderr, "demo: setup:", err)
		return 2
	}
	defer d.stopAll()
	if o.console != "" {
		url, stop, err := d.serveConsole(o.console)
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			return 2
		}
		defer stop()
		fmt.Printf("demo: console on %s: watch the consumer groups, the outbox and the kills live (this machine only, no password)\n", url)
	}

	api := d.newProc("orders-api", "orders-api", "-addr", o.addr)
	relay := d.newProc("relay", "relay")
	var victims []*proc
	for i := 1; i <= o.workers; i++ {
		victims = append(victims, d.newProc(fmt.Sprintf("payments-worker-%d", i), "payments-worker"))
	}
	shipping := d.newProc("shipping-worker", "shipping-worker")
	victims = append(victims, shipping, relay)
	for _, p := range append([]*proc{api}, victims...) {
		if err := d.startProc(p); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			return 2
		}
	}
	fmt.Printf("demo: started orders-api, relay, %d × payments-worker, shipping-worker\n", o.workers)
	if err := waitHealthy(ctx, "http://"+o.addr+"/healthz", 20*time.Second); err != nil {
		fmt.Fprintf(os.Stderr, "demo: orders-api did not come up (see %s): %v\n", api.logPath, err)
		return 2
	}

	summaryPath, reportPath := filepath.Join(o.logs, "loadgen.json"), filepath.Join(o.logs, "verify.json")
	for _, stale := range []string{summaryPath, reportPath} { // from an earlier run with the same -logs
		if err := os.Remove(stale); err != nil && !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintln(os.Stderr, "demo:", err)
			return 2
		}
	}
	lg := d.newProc("loadgen", "loadgen", "-api", "http://"+o.addr, "-duration", o.duration.String(),
		"-rate", fmt.Sprint(o.rate), "-out", summaryPath, "-progress", "5s")
	lg.oneShot = true
	fmt.Printf("demo: loadgen places orders for %s at %g/s; every %s-%s a payments-worker, the shipping-worker or the relay is SIGKILLed and restarted %s later\n",
		o.duration, o.rate, o.killMin, o.killMax, o.restartAfter)
	d.mu.Lock()
	d.start = time.Now()
	d.mu.Unlock()
	if err := d.startProc(lg); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 2
	}
	loadDone := make(chan struct{})
	go func() { lg.wait(); close(loadDone) }()
	chaosDone := make(chan struct{})
	go func() { defer close(chaosDone); d.chaos(ctx, loadDone, victims) }()
	d.progress(ctx, loadDone)
	<-chaosDone
	if ctx.Err() != nil {
		return 130
	}
	lgState := lg.wait()
	var sum shop.LoadSummary
	if err := shop.ReadJSON(summaryPath, &sum); err != nil {
		fmt.Fprintf(os.Stderr, "demo: loadgen wrote no summary (%v); see %s\n", err, lg.logPath)
		return 1
	}
	if !lgState.Success() {
		fmt.Printf("demo: loadgen exited with %v: %d orders failed (see %s)\n", lgState, sum.Failed, lg.logPath)
	}

	fmt.Printf("demo: load done; waiting for the pipeline to drain, then verifying (up to %s)\n", o.drainTimeout)
	v := d.newProc("verify", "verify", "-accepted", summaryPath, "-wait", o.drainTimeout.String(), "-out", reportPath)
	v.oneShot = true
	v.stdout = &prefixWriter{w: os.Stdout, prefix: "  | "}
	if err := d.startProc(v); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 2
	}
	verified := make(chan *os.ProcessState, 1)
	go func() { verified <- v.wait() }()
	var vState *os.ProcessState
	select {
	case <-ctx.Done():
		return 130 // the deferred stopAll stops verify too
	case vState = <-verified:
	}
	var report shop.Report
	if err := shop.ReadJSON(reportPath, &report); err != nil {
		fmt.Fprintf(os.Stderr, "demo: verify wrote no report (%v, %v); see %s\n", err, vState, v.logPath)
		return 1
	}

	fmt.Println("demo: stopping every program (SIGTERM, SIGKILL after", o.stopTimeout.String()+")")
	d.stopAll()
	d.printSummary(sum, report)
	if !vState.Success() || !report.OK {
		return 1
	}
	return 0
}

func (d *demo) newProc(name, program string, args ...string) *proc {
	return &proc{
		name:    name,
		path:    filepath.Join(d.opts.bin, program),
		args:    args,
		env:     d.cfg.Env(),
		logPath: filepath.Join(d.opts.logs, name+".log"),
	}
}

func (d *demo) startProc(p *proc) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closing {
		return errClosing
	}
	if err := p.start(d.sp, d.onUnexpectedExit); err != nil {
		return err
	}
	for _, q := range d.procs {
		if q == p {
			return nil
		}
	}
	d.procs = append(d.procs, p)
	return nil
}

// onUnexpectedExit restarts a program that exited by itself: a crash is
// reported, and the pipeline keeps running.
func (d *demo) onUnexpectedExit(p *proc, err error) {
	d.mu.Lock()
	if d.closing {
		d.mu.Unlock()
		return
	}
	d.unexpected++
	d.mu.Unlock()
	fmt.Printf("[%4s] warning: %s exited by itself (%v); see %s; restarting it in %s\n", d.elapsed(), p.name, err, p.logPath, d.opts.restartAfter)
	go func() {
		time.Sleep(d.opts.restartAfter)
		if err := d.startProc(p); err != nil && !errors.Is(err, errClosing) {
			fmt.Printf("[%4s] warning: cannot restart %s: %v\n", d.elapsed(), p.name, err)
		}
	}()
}

// elapsed is the time since the load started, for progress lines.
func (d *demo) elapsed() string {
	d.mu.Lock()
	start := d.start
	d.mu.Unlock()
	if start.IsZero() {
		return "0s"
	}
	return time.Since(start).Round(time.Second).String()
}

// chaos SIGKILLs a victim every killMin..killMax until the load is done.
// The victims' kinds (payments-worker, shipping-worker, relay) are killed in
// rounds, each round every kind once in a random order, so that even a short
// demo kills each kind; within a kind the instance is random.
func (d *demo) chaos(ctx context.Context, loadDone <-chan struct{}, victims []*proc) {
	kinds := map[string][]*proc{}
	var names []string
	for _, p := range victims {
		kind := strings.TrimRight(p.name, "-0123456789")
		if _, ok := kinds[kind]; !ok {
			names = append(names, kind)
		}
		kinds[kind] = append(kinds[kind], p)
	}
	var round []string
	for {
		wait := d.opts.killMin + rand.N(d.opts.killMax-d.opts.killMin+1)
		select {
		case <-ctx.Done():
			return
		case <-loadDone:
			return
		case <-time.After(wait):
		}
		if len(round) == 0 {
			round = slices.Clone(names)
			rand.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
		}
		group := kinds[round[0]]
		round = round[1:]
		p := group[rand.IntN(len(group))]
		pid := p.pid()
		p.kill()
		d.mu.Lock()
		d.kills[strings.TrimRight(p.name, "-0123456789")]++
		total := 0
		for _, n := range d.kills {
			total += n
		}
		d.mu.Unlock()
		fmt.Printf("[%4s] chaos: SIGKILL %s (pid %d), kill #%d; restarting it in %s\n", d.elapsed(), p.name, pid, total, d.opts.restartAfter)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d.opts.restartAfter):
		}
		if err := d.startProc(p); err != nil {
			if !errors.Is(err, errClosing) {
				fmt.Printf("[%4s] chaos: cannot restart %s: %v\n", d.elapsed(), p.name, err)
			}
			return
		}
		fmt.Printf("[%4s] chaos: %s restarted (pid %d)\n", d.elapsed(), p.name, p.pid())
	}
}

// progress prints a line every 2s until the load is done.
func (d *demo) progress(ctx context.Context, loadDone <-chan struct{}) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-loadDone:
			return
		case <-t.C:
		}
		var orders, payments, shipments int
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := d.pool.QueryRow(qctx, `SELECT (SELECT count(*) FROM `+d.cfg.Table("orders")+`),
			(SELECT count(*) FROM `+d.cfg.Table("payments")+`), (SELECT count(*) FROM `+d.cfg.Table("shipments")+`)`).
			Scan(&orders, &payments, &shipments)
		cancel()
		d.mu.Lock()
		kills := 0
		for _, n := range d.kills {
			kills += n
		}
		d.mu.Unlock()
		if err != nil {
			if ctx.Err() == nil {
				fmt.Printf("[%4s] progress: %v\n", d.elapsed(), err)
			}
			continue
		}
		fmt.Printf("[%4s] orders %6d | payments %6d | shipments %6d | kills %d\n", d.elapsed(), orders, payments, shipments, kills)
	}
}

// stopAll stops every program: SIGTERM, then SIGKILL to those still running
// after stopTimeout. loadgen and verify stop first (loadgen still needs the
// API for the orders it has in flight), then the pipeline, all at once. No
// program is started after it began.
func (d *demo) stopAll() {
	d.mu.Lock()
	first := !d.closing
	d.closing = true
	var clients, pipeline []*proc
	for _, p := range d.procs {
		if p.oneShot {
			clients = append(clients, p)
		} else {
			pipeline = append(pipeline, p)
		}
	}
	d.mu.Unlock()
	d.stopEach(clients, first)
	d.stopEach(pipeline, first)
}

func (d *demo) stopEach(procs []*proc, report bool) {
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			state, killed := p.stop(d.opts.stopTimeout)
			switch {
			case !report || state == nil:
			case killed:
				fmt.Printf("demo: %s did not stop within %s and was killed; see %s\n", p.name, d.opts.stopTimeout, p.logPath)
			case !state.Success() && !p.oneShot:
				fmt.Printf("demo: %s stopped with %v; see %s\n", p.name, state, p.logPath)
			}
		}()
	}
	wg.Wait()
}

// killAll SIGKILLs every program at once.
func (d *demo) killAll() {
	d.mu.Lock()
	d.closing = true
	procs := append([]*proc(nil), d.procs...)
	d.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.kill() }()
	}
	wg.Wait()
}

func waitHealthy(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *demo) printSummary(sum shop.LoadSummary, r shop.Report) {
	d.mu.Lock()
	kills := 0
	var kinds []string
	for k, n := range d.kills {
		kills += n
		kinds = append(kinds, fmt.Sprintf("%s ×%d", k, n))
	}
	unexpected := d.unexpected
	d.mu.Unlock()
	sort.Strings(kinds)
	line := func(name string, value any, note string) {
		fmt.Println(strings.TrimRight(fmt.Sprintf("  %-24s %-12v %s", name, value, note), " "))
	}
	fmt.Println()
	fmt.Println("==================== orders demo: summary ====================")
	line("orders requested", sum.Requested, fmt.Sprintf("placed by loadgen in %.0fs", sum.ElapsedSeconds))
	line("duplicate clicks", sum.DuplicateClicks, "orders sent twice at once with the same Idempotency-Key")
	line("client retries", sum.ClientRetries, "requests sent again with the same key after a client timeout")
	line("redeliveries", sum.Redeliveries, "OrderPlaced messages produced to Kafka a second time, unchanged")
	line("orders", r.Orders, fmt.Sprintf("in the database (loadgen was answered 201 for %d)", sum.Accepted))
	line("payments", r.Payments, "")
	line("shipments", r.Shipments, "")
	line("duplicates applied", r.DuplicatesApplied, "must be 0")
	line("lost", r.Missing, fmt.Sprintf("must be 0 (accepted but absent %d, unpaid %d, unshipped %d)", r.Lost, r.Unpaid, r.Unshipped))
	if r.Invented+r.Orphans+r.AmountMismatches > 0 {
		line("other problems", r.Invented+r.Orphans+r.AmountMismatches, fmt.Sprintf("must be 0 (invented %d, orphans %d, amount mismatches %d)", r.Invented, r.Orphans, r.AmountMismatches))
	}
	line("dead letters", r.DeadLetters+r.OutboxDeadLetters, "")
	line("kills", kills, "SIGKILL: "+strings.Join(kinds, ", "))
	if unexpected > 0 {
		line("unexpected exits", unexpected, "programs that died by themselves and were restarted; see the logs")
	}
	line("throughput", fmt.Sprintf("%.1f/s", sum.Throughput), "orders accepted per second")
	line("HTTP latency", fmt.Sprintf("p50 %s", shop.FormatMS(sum.HTTPLatencyMS.P50)), fmt.Sprintf("p99 %s  (POST /orders, %d requests)", shop.FormatMS(sum.HTTPLatencyMS.P99), sum.HTTPLatencyMS.Count))
	line("order→shipped latency", fmt.Sprintf("p50 %s", shop.FormatMS(r.OrderToShippedMS.P50)), fmt.Sprintf("p99 %s  (created_at to shipped_at, kills included)", shop.FormatMS(r.OrderToShippedMS.P99)))
	line("logs", d.opts.logs, "")
	if r.OK {
		fmt.Println("RESULT: OK: every accepted order was paid exactly once and shipped exactly once")
	} else {
		fmt.Println("RESULT: FAILED: see the verify output above")
	}
}
