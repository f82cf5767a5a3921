// Command loadgen places orders through the API the way real clients do, and
// misbehaves the way real clients and brokers do:
//
//   - double clicks: a share of orders (-dup-share) is sent twice at once
//     with the same Idempotency-Key;
//   - client retries: a request that times out is sent again with the same
//     key; a share of first attempts (-abandon-share) uses a timeout of a
//     few milliseconds, so the client gives up while the server carries on;
//   - redeliveries: it reads OrderPlaced messages back from Kafka and
//     produces a share of them (-reproduce-share) again, unchanged, headers
//     included, the way a producer retry or a mirror replay would.
//
// It writes a JSON summary (-out) that verify -accepted and the demo read:
// the order ids it was answered 201 for, the counts above and the HTTP
// latency percentiles.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/examples/orders/internal/shop"
	"github.com/exactlyhq/exactly/outbox"
)

func main() { os.Exit(run()) }

type options struct {
	api            string
	orders         int
	duration       time.Duration
	rate           float64
	concurrency    int
	dupShare       float64
	abandonShare   float64
	timeout        time.Duration
	giveUp         time.Duration
	reproduceShare float64
	reproduceWait  time.Duration
	customers      int
	progress       time.Duration
	out            string
}

func run() int {
	var o options
	flag.StringVar(&o.api, "api", "http://127.0.0.1:8080", "base URL of orders-api")
	flag.IntVar(&o.orders, "orders", 0, "orders to place (default 1000 when -duration is not set)")
	flag.DurationVar(&o.duration, "duration", 0, "place orders for this long")
	flag.Float64Var(&o.rate, "rate", 100, "orders per second (0: as fast as -concurrency allows)")
	flag.IntVar(&o.concurrency, "concurrency", 64, "most orders in flight at once")
	flag.Float64Var(&o.dupShare, "dup-share", 0.3, "share of orders double-clicked: sent twice at once with the same key")
	flag.Float64Var(&o.abandonShare, "abandon-share", 0.05, "share of first attempts sent with a client timeout of a few ms, then retried with the same key")
	flag.DurationVar(&o.timeout, "timeout", 2*time.Second, "client timeout of a request; it is then retried with the same key")
	flag.DurationVar(&o.giveUp, "give-up", time.Minute, "stop retrying an order after this long (it counts as failed)")
	flag.Float64Var(&o.reproduceShare, "reproduce-share", 0.1, "share of OrderPlaced messages read back from Kafka and produced again unchanged")
	flag.DurationVar(&o.reproduceWait, "reproduce-wait", 30*time.Second, "after the last order, wait at most this long for the messages chosen for re-producing")
	flag.IntVar(&o.customers, "customers", 50, "distinct customers (X-Customer)")
	flag.DurationVar(&o.progress, "progress", 5*time.Second, "how often to print a progress line")
	flag.StringVar(&o.out, "out", "", "write the JSON summary to this file")
	flag.Parse()
	if o.orders == 0 && o.duration == 0 {
		o.orders = 1000
	}
	for name, v := range map[string]float64{"dup-share": o.dupShare, "abandon-share": o.abandonShare, "reproduce-share": o.reproduceShare} {
		if v < 0 || v > 1 {
			fmt.Fprintf(os.Stderr, "loadgen: -%s must be in [0, 1], got %v\n", name, v)
			return 2
		}
	}
	if o.concurrency < 1 || o.rate < 0 || o.orders < 0 || o.duration < 0 {
		fmt.Fprintln(os.Stderr, "loadgen: -concurrency must be at least 1; -rate, -orders and -duration must not be negative")
		return 2
	}
	o.api = strings.TrimRight(o.api, "/")
	cfg, err := shop.FromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 2
	}
	// The first signal stops placing new orders; those in flight get 10s
	// more to be answered. A second signal stops at once.
	stopNew, cancelNew := context.WithCancel(context.Background())
	defer cancelNew()
	hard, cancelHard := context.WithCancel(context.Background())
	defer cancelHard()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Println("loadgen: interrupted: placing no more orders; giving those in flight 10s")
		cancelNew()
		select {
		case <-sigs:
		case <-time.After(10 * time.Second):
		}
		cancelHard()
	}()

	lg := &loadgen{
		opts:     o,
		client:   &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * o.concurrency}},
		accepted: map[string]struct{}{},
		done:     make(chan struct{}),
	}
	if err := lg.waitHealthy(stopNew); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	var rd *redeliverer
	if o.reproduceShare > 0 {
		rd, err = startRedeliverer(hard, cfg, o.reproduceShare)
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen: cannot read OrderPlaced back from Kafka:", err)
			return 1
		}
	}
	fmt.Printf("loadgen: placing %s at %s against %s (double clicks %.0f%%, abandoned first attempts %.0f%%, re-produced messages %.0f%%)\n",
		o.what(), o.rateString(), o.api, 100*o.dupShare, 100*o.abandonShare, 100*o.reproduceShare)

	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		if o.progress <= 0 {
			<-lg.done
			return
		}
		t := time.NewTicker(o.progress)
		defer t.Stop()
		for {
			select {
			case <-lg.done:
				return
			case <-t.C:
				lg.printProgress(rd)
			}
		}
	}()
	elapsed := lg.place(stopNew, hard)
	<-progressDone
	sum := lg.summary(elapsed)
	if rd != nil {
		wait := o.reproduceWait
		if stopNew.Err() != nil { // interrupted: do not wait for the pipeline
			wait = 0
		}
		rd.finish(hard, sum.AcceptedIDs, wait)
		sum.Redeliveries = int(rd.count.Load())
	}
	fmt.Printf("loadgen: done in %s: requested %d, accepted %d, failed %d, id mismatches %d, duplicate clicks %d, client retries %d, 409s %d, 5xx %d, replayed 201s %d, redeliveries %d, %.1f orders/s, http p50 %s p99 %s\n",
		time.Duration(sum.ElapsedSeconds*float64(time.Second)).Round(time.Millisecond), sum.Requested, sum.Accepted, sum.Failed, sum.IDMismatches,
		sum.DuplicateClicks, sum.ClientRetries, sum.Conflicts, sum.ServerErrors, sum.Replayed, sum.Redeliveries, sum.Throughput,
		shop.FormatMS(sum.HTTPLatencyMS.P50), shop.FormatMS(sum.HTTPLatencyMS.P99))
	if o.out != "" {
		if err := shop.WriteJSON(o.out, sum); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			return 1
		}
	}
	if sum.Failed > 0 || sum.IDMismatches > 0 {
		return 1
	}
	return 0
}

func (o options) what() string {
	switch {
	case o.orders > 0 && o.duration > 0:
		return fmt.Sprintf("up to %d orders for %s", o.orders, o.duration)
	case o.orders > 0:
		return fmt.Sprintf("%d orders", o.orders)
	default:
		return "orders for " + o.duration.String()
	}
}

func (o options) rateString() string {
	if o.rate == 0 {
		return fmt.Sprintf("full speed (%d in flight)", o.concurrency)
	}
	return fmt.Sprintf("%g/s", o.rate)
}

type loadgen struct {
	opts   options
	client *http.Client

	requested, dupClicks, retries, conflicts, serverErrors, replayed, failed, mismatches, rejected atomic.Int64

	mu        sync.Mutex
	accepted  map[string]struct{}
	ids       []string
	latencies []time.Duration
	start     time.Time
	done      chan struct{} // closed when place returns
}

func (lg *loadgen) waitHealthy(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, lg.opts.api+"/healthz", nil)
		resp, err := lg.client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /healthz: %s", resp.Status)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("orders-api at %s is not healthy: %w", lg.opts.api, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// place places orders until -orders or -duration is reached or stopNew
// ends, waits for those in flight and returns how long it took.
func (lg *loadgen) place(stopNew, hard context.Context) time.Duration {
	o := lg.opts
	defer close(lg.done)
	sem := make(chan struct{}, o.concurrency)
	var wg sync.WaitGroup
	lg.mu.Lock()
	lg.start = time.Now()
	start := lg.start
	lg.mu.Unlock()
loop:
	for i := 0; o.orders == 0 || i < o.orders; i++ {
		if o.rate > 0 {
			next := start.Add(time.Duration(float64(i) / o.rate * float64(time.Second)))
			if d := time.Until(next); d > 0 {
				select {
				case <-stopNew.Done():
					break loop
				case <-time.After(d):
				}
			}
		}
		if o.duration > 0 && time.Since(start) >= o.duration {
			break
		}
		select {
		case <-stopNew.Done():
			break loop
		case sem <- struct{}{}:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			lg.placeOrder(hard)
		}()
	}
	wg.Wait()
	return time.Since(start)
}

var skus = []string{"kettle", "teapot", "mug", "grinder", "scale", "filter-papers", "beans-250g", "beans-1kg"}

func (lg *loadgen) placeOrder(ctx context.Context) {
	lg.requested.Add(1)
	key := uuid.Must(uuid.NewV7()).String()
	customer := fmt.Sprintf("customer-%03d", rand.IntN(max(lg.opts.customers, 1)))
	body, _ := json.Marshal(shop.OrderRequest{Customer: customer, SKU: skus[rand.IntN(len(skus))], AmountCents: 100 + rand.IntN(50_000)})
	clicks := 1
	if rand.Float64() < lg.opts.dupShare {
		clicks = 2
		lg.dupClicks.Add(1)
	}
	ids := make([]string, clicks)
	var wg sync.WaitGroup
	for c := range clicks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c > 0 { // the second click lands while the first is in flight
				time.Sleep(time.Duration(rand.IntN(15)) * time.Millisecond)
			}
			id, err := lg.click(ctx, key, customer, body)
			if err != nil {
				fmt.Fprintf(os.Stderr, "loadgen: order with key %s: %v\n", key, err)
				return
			}
			ids[c] = id
		}()
	}
	wg.Wait()
	lg.mu.Lock()
	defer lg.mu.Unlock()
	got := 0
	for _, id := range ids {
		if id == "" {
			continue
		}
		got++
		if _, ok := lg.accepted[id]; !ok {
			lg.accepted[id] = struct{}{}
			lg.ids = append(lg.ids, id)
		}
	}
	if got == 0 {
		lg.failed.Add(1)
	}
	if clicks == 2 && ids[0] != "" && ids[1] != "" && ids[0] != ids[1] {
		lg.mismatches.Add(1)
		fmt.Fprintf(os.Stderr, "loadgen: key %s got two orders: %s and %s\n", key, ids[0], ids[1])
	}
}

var errRejected = errors.New("rejected")

// click sends one order request until it is answered 201, retrying with the
// same key after timeouts, lost connections, 409 and 5xx.
func (lg *loadgen) click(ctx context.Context, key, customer string, body []byte) (string, error) {
	start := time.Now()
	for attempt := 1; ; attempt++ {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if time.Since(start) > lg.opts.giveUp {
			return "", fmt.Errorf("gave up after %d attempts in %s", attempt-1, lg.opts.giveUp)
		}
		timeout := lg.opts.timeout
		if attempt == 1 && rand.Float64() < lg.opts.abandonShare {
			// Shorter than the API's usual answer: the client gives up
			// before, during or after the server's commit.
			timeout = 200*time.Microsecond + rand.N(3*time.Millisecond)
		}
		status, hdr, respBody, latency, err := lg.send(ctx, timeout, key, customer, body)
		if err != nil {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			lg.retries.Add(1) // timed out or lost the connection: same key again
			backoff(ctx, attempt)
			continue
		}
		lg.mu.Lock()
		lg.latencies = append(lg.latencies, latency)
		lg.mu.Unlock()
		switch {
		case status == http.StatusCreated:
			var o shop.Order
			if err := json.Unmarshal(respBody, &o); err != nil || o.ID == "" {
				return "", fmt.Errorf("201 with an unreadable body %q: %v", respBody, err)
			}
			if hdr.Get("Idempotent-Replayed") == "true" {
				lg.replayed.Add(1)
			}
			return o.ID, nil
		case status == http.StatusConflict:
			lg.conflicts.Add(1)
			wait := 200 * time.Millisecond
			if s, err := strconv.Atoi(hdr.Get("Retry-After")); err == nil && s > 0 {
				wait = min(time.Duration(s)*time.Second, time.Second)
			}
			sleepCtx(ctx, wait)
		case status >= 500:
			lg.serverErrors.Add(1)
			backoff(ctx, attempt)
		default:
			lg.rejected.Add(1)
			return "", fmt.Errorf("%w: %d %s", errRejected, status, bytes.TrimSpace(respBody))
		}
	}
}

func (lg *loadgen) send(ctx context.Context, timeout time.Duration, key, customer string, body []byte) (int, http.Header, []byte, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, lg.opts.api+"/orders", bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set(shop.CustomerHeader, customer)
	t0 := time.Now()
	resp, err := lg.client.Do(req)
	if err != nil {
		return 0, nil, nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, nil, 0, err
	}
	return resp.StatusCode, resp.Header, b, time.Since(t0), nil
}

func backoff(ctx context.Context, attempt int) {
	d := min(20*time.Millisecond<<min(attempt-1, 6), time.Second)
	sleepCtx(ctx, d/2+rand.N(d/2+1))
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (lg *loadgen) printProgress(rd *redeliverer) {
	lg.mu.Lock()
	accepted := len(lg.ids)
	lat := shop.PercentilesOf(append([]time.Duration(nil), lg.latencies...))
	elapsed := time.Since(lg.start)
	lg.mu.Unlock()
	var redelivered int64
	if rd != nil {
		redelivered = rd.count.Load()
	}
	fmt.Printf("loadgen: %4s placed %d (%.0f/s), accepted %d, duplicate clicks %d, client retries %d, 409s %d, 5xx %d, redeliveries %d, http p50 %s p99 %s\n",
		elapsed.Round(time.Second), lg.requested.Load(), float64(lg.requested.Load())/elapsed.Seconds(), accepted, lg.dupClicks.Load(),
		lg.retries.Load(), lg.conflicts.Load(), lg.serverErrors.Load(), redelivered, shop.FormatMS(lat.P50), shop.FormatMS(lat.P99))
}

func (lg *loadgen) summary(elapsed time.Duration) shop.LoadSummary {
	lg.mu.Lock()
	defer lg.mu.Unlock()
	s := shop.LoadSummary{
		Requested:       int(lg.requested.Load()),
		Accepted:        len(lg.ids),
		AcceptedIDs:     append([]string{}, lg.ids...),
		Failed:          int(lg.failed.Load()),
		IDMismatches:    int(lg.mismatches.Load()),
		DuplicateClicks: int(lg.dupClicks.Load()),
		ClientRetries:   int(lg.retries.Load()),
		Conflicts:       int(lg.conflicts.Load()),
		ServerErrors:    int(lg.serverErrors.Load()),
		Replayed:        int(lg.replayed.Load()),
		ElapsedSeconds:  elapsed.Seconds(),
		HTTPLatencyMS:   shop.PercentilesOf(lg.latencies),
	}
	if elapsed > 0 {
		s.Throughput = float64(s.Accepted) / elapsed.Seconds()
	}
	return s
}

// redeliverer reads OrderPlaced messages back from Kafka, from the end of
// each partition at start, and produces the chosen ones again unchanged:
// same key, value and headers, so the same Idempotency-Key.
type redeliverer struct {
	share   float64
	topic   string
	readers []*kafka.Reader
	writer  *kafka.Writer
	queue   chan kafka.Message
	wg      sync.WaitGroup
	count   atomic.Int64

	cancelRead context.CancelFunc
	writerDone chan struct{}

	mu   sync.Mutex
	done map[string]bool // message ids already re-produced
	keys map[string]bool // order ids whose OrderPlaced was re-produced
}

func startRedeliverer(ctx context.Context, cfg shop.Config, share float64) (*redeliverer, error) {
	topic := cfg.OrdersPlaced()
	ends, err := shop.EndOffsets(ctx, cfg.Brokers, topic)
	if err != nil {
		return nil, err
	}
	rd := &redeliverer{
		share: share, topic: topic,
		// Configured like the relay's writer: the copy goes to the
		// partition of the original.
		writer: outbox.NewWriter(cfg.Brokers...),
		queue:  make(chan kafka.Message, 10_000),
		done:   map[string]bool{}, keys: map[string]bool{},
	}
	readCtx, cancel := context.WithCancel(ctx)
	for p, off := range ends {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: cfg.Brokers, Topic: topic, Partition: p, MinBytes: 1, MaxBytes: 4 << 20, MaxWait: 200 * time.Millisecond})
		if err := r.SetOffset(off); err != nil {
			cancel()
			return nil, err
		}
		rd.readers = append(rd.readers, r)
		rd.wg.Add(1)
		go func() {
			defer rd.wg.Done()
			for {
				m, err := r.ReadMessage(readCtx)
				if err != nil {
					if readCtx.Err() == nil {
						fmt.Fprintf(os.Stderr, "loadgen: read %s/%d: %v\n", topic, p, err)
					}
					return
				}
				rd.offer(m)
			}
		}()
	}
	rd.cancelRead = cancel
	rd.writerDone = make(chan struct{})
	go rd.produce(ctx)
	return rd, nil
}

func (rd *redeliverer) chosen(orderID string) bool {
	h := fnv.New32a()
	h.Write([]byte(orderID))
	return float64(h.Sum32()%1_000_000) < rd.share*1_000_000
}

func (rd *redeliverer) offer(m kafka.Message) {
	id := ""
	for _, h := range m.Headers {
		if strings.EqualFold(h.Key, exactly.Header) {
			id = string(h.Value)
			break
		}
	}
	if id == "" || !rd.chosen(string(m.Key)) {
		return
	}
	rd.mu.Lock()
	again := rd.done[id]
	rd.done[id] = true
	rd.mu.Unlock()
	if again { // our own copy, read back
		return
	}
	// Unchanged: key, value and headers as read; Kafka assigns the offset.
	rd.queue <- kafka.Message{Topic: rd.topic, Key: m.Key, Value: m.Value, Headers: m.Headers}
}

// produce writes queued copies in batches.
func (rd *redeliverer) produce(ctx context.Context) {
	defer close(rd.writerDone)
	for {
		m, ok := <-rd.queue
		if !ok {
			return
		}
		batch := []kafka.Message{m}
	fill:
		for len(batch) < 500 {
			select {
			case m, ok := <-rd.queue:
				if !ok {
					break fill
				}
				batch = append(batch, m)
			default:
				break fill
			}
		}
		for {
			err := rd.writer.WriteMessages(ctx, batch...)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			fmt.Fprintf(os.Stderr, "loadgen: re-produce %d messages: %v; retrying\n", len(batch), err)
			sleepCtx(ctx, 500*time.Millisecond)
		}
		rd.count.Add(int64(len(batch)))
		rd.mu.Lock()
		for _, m := range batch {
			rd.keys[string(m.Key)] = true
		}
		rd.mu.Unlock()
	}
}

// finish waits until the OrderPlaced of every chosen accepted order was
// re-produced (or wait passed), then stops reading and writing.
func (rd *redeliverer) finish(ctx context.Context, accepted []string, wait time.Duration) {
	var want []string
	for _, id := range accepted {
		if rd.chosen(id) {
			want = append(want, id)
		}
	}
	deadline := time.Now().Add(wait)
	for {
		rd.mu.Lock()
		missing := 0
		for _, id := range want {
			if !rd.keys[id] {
				missing++
			}
		}
		rd.mu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			fmt.Printf("loadgen: %d of %d messages chosen for re-producing were not seen within %s: not re-produced\n", missing, len(want), wait)
			break
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
	rd.cancelRead()
	rd.wg.Wait()
	for _, r := range rd.readers {
		_ = r.Close()
	}
	close(rd.queue)
	<-rd.writerDone
	_ = rd.writer.Close()
}
