package console_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/console"
	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/pgtest"
	"github.com/exactlyhq/exactly/internal/runtest"
	"github.com/exactlyhq/exactly/internal/services"
	"github.com/exactlyhq/exactly/outbox"
)

const (
	user     = "ops"
	password = "browser-test-password"
)

// chromium returns the browser to drive: $EXACTLY_CHROMIUM, or Debian's
// chromium on the PATH. Integration tests never skip silently: without one
// the test fails and says how to install it.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("EXACTLY_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on the PATH: run deploy/local/chromium.sh install (make test does), or set EXACTLY_CHROMIUM")
	return ""
}

// page is a tab of a headless Chromium whose every request carries the
// console's basic-auth credentials, as a browser that signed in does.
type page struct {
	t   *testing.T
	ctx context.Context
}

func browser(t *testing.T) *page {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // tests run as root in CI
		chromedp.WindowSize(1280, 860),
		chromedp.DisableGPU,
		chromedp.Flag("hide-scrollbars", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	// The first call starts the browser, which lives as long as its context:
	// no timeout on it (steps have theirs).
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("start %s: %v", chromium(t), err)
	}
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}}); err != nil {
		t.Fatal(err)
	}
	return &page{t: t, ctx: ctx}
}

// do runs the steps, within 30s.
func (p *page) do(steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.t.Fatal(err)
	}
}

// text is the text of the element the CSS selector finds, once visible.
func (p *page) text(sel string) string {
	p.t.Helper()
	return run(p, chromedp.Text(chromedp.CSS(sel), chromedp.NodeVisible))
}

func run[T any](p *page, a chromedp.Action[T]) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		p.t.Fatal(err)
	}
	return v
}

// click clicks the element the CSS selector finds, once visible.
func click(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible)
}

func visible(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.WaitVisible(chromedp.CSS(sel))
}

// TestBrowser: a poison message is dead-lettered by a consumer; in a real
// browser the overview names it in red, its page shows its key and headers
// (markup in them shown as text, none of it run), and it is replayed
// through the confirmation page once the poison is cured; the consumer
// then applies it exactly once. A cross-site form posting the replay, a
// POST without the CSRF token and one without credentials are refused.
// With UPDATE_SCREENSHOTS=1 it writes the screenshots of the README into
// docs/.
func TestBrowser(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	schema := pgtest.Schema(t, pool)
	topic := kafkatest.Topic(t, 2)
	group := "payments-" + schema[len(schema)-6:]
	ccfg := consumer.Config{Brokers: kafkatest.Brokers(), GroupID: group, Topics: []string{topic}, Pool: pool,
		Inbox: inbox.Config{Schema: schema, Scope: group}, BatchWait: 5 * time.Millisecond, FetchMaxWait: 100 * time.Millisecond,
		SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}
	obCfg := outbox.Config{Schema: schema}
	if err := consumer.Migrate(ctx, pool, ccfg); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Migrate(ctx, pool, obCfg); err != nil {
		t.Fatal(err)
	}
	payments := pgx.Identifier{schema, "payments"}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+payments+" (token text NOT NULL, amount text NOT NULL)"); err != nil {
		t.Fatal(err)
	}

	// The consumer records a payment per message; order-7's handler fails
	// for good until the fix is "deployed" (poison set to false).
	const poisonToken = "order-7"
	var poison atomic.Bool
	poison.Store(true)
	c, err := consumer.New(ccfg, consumer.HandlerFunc(func(ctx context.Context, tx pgx.Tx, m consumer.Message) error {
		if m.Token.String() == poisonToken && poison.Load() {
			return consumer.Permanent(errors.New("card processor answered 502 for order-7"))
		}
		_, err := tx.Exec(ctx, "INSERT INTO "+payments+" VALUES ($1, $2)", m.Token.String(), string(m.Value))
		return err
	}))
	if err != nil {
		t.Fatal(err)
	}
	runtest.Background(t, "consumer", 30*time.Second, c.Run)
	relay, err := outbox.NewRelay(pool, outbox.RelayConfig{Outbox: obCfg, Brokers: kafkatest.Brokers(), PollInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runtest.Background(t, "relay", 30*time.Second, relay.Run)

	// Markup in the poison message's key and headers: shown as text, never
	// run (the page would set window.xss).
	const evilKey = `<script>window.xss = "key"</script>`
	var msgs []kafka.Message
	for i := range 12 {
		tok := fmt.Sprintf("order-%d", i)
		m := kafka.Message{Key: []byte(tok), Value: []byte(fmt.Sprintf(`{"order":"%s","amount":"%d.00"}`, tok, 10+i)),
			Headers: []kafka.Header{{Key: "Idempotency-Key", Value: []byte(tok)}}}
		if tok == poisonToken {
			m.Key = []byte(evilKey)
			m.Headers = append(m.Headers, kafka.Header{Key: "x-note", Value: []byte(`<img src=x onerror="window.xss='header'">`)})
		}
		msgs = append(msgs, m)
	}
	kafkatest.Produce(t, kafkatest.Writer(t, topic), msgs...)
	waitFor(t, "the poison message dead-lettered and the others paid", func() bool {
		return count(t, pool, "SELECT count(*) FROM "+pgx.Identifier{schema, "dead_letters"}.Sanitize()) == 1 &&
			count(t, pool, "SELECT count(*) FROM "+payments) == 11
	})

	cons, err := console.New(console.Config{DB: pool, Schema: schema, Brokers: kafkatest.Brokers(), Groups: []string{group},
		Username: user, Password: password, RefreshInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(cons)
	defer srv.Close()
	b := browser(t)
	shots := screenshots(t)

	// The overview: the dead letter is what needs a person.
	b.do(chromedp.Navigate(srv.URL+"/"), visible("#attention"))
	attention, groups := b.text("#attention"), b.text("#groups")
	shots.take(b, "console-overview.png")
	if !strings.Contains(attention, "1 dead letter of "+group+" (permanent) waits") || !strings.Contains(groups, group) {
		t.Fatalf("overview: attention %q, groups %q", attention, groups)
	}

	// From the overview to the list, to the dead letter's page.
	b.do(click("#attention a"), visible("a.dl-link"), click("a.dl-link"), visible("#dl-id"))
	key, headers, reason, errText := b.text("#dl-key pre"), b.text("#dl-headers"), b.text("#dl-reason"), b.text("#dl-error")
	xss := run(b, chromedp.Evaluate[string](`String(window.xss)`))
	shots.take(b, "console-dead-letter.png")
	if key != evilKey || !strings.Contains(headers, `<img src=x onerror="window.xss='header'">`) || reason != consumer.ReasonPermanent ||
		!strings.Contains(errText, "502 for order-7") || xss != "undefined" {
		t.Fatalf("dead letter page: key %q, headers %q, reason %q, error %q, window.xss %s", key, headers, reason, errText, xss)
	}
	var id int64
	if err := pool.QueryRow(ctx, "SELECT id FROM "+pgx.Identifier{schema, "dead_letters"}.Sanitize()).Scan(&id); err != nil {
		t.Fatal(err)
	}

	// Refused: another site's form posting the replay in this browser
	// (which sends the credentials), a POST of the page without the CSRF
	// token, and one without credentials.
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<form id="f" method="post" action="%s/dead-letters/consumer/replay"><input name="id" value="%d"></form>
<script>document.getElementById("f").submit()</script>`, srv.URL, id)
	}))
	defer attacker.Close()
	b.do(chromedp.Navigate(attacker.URL), visible("#error"))
	attacked := b.text("#error")
	b.do(chromedp.Navigate(fmt.Sprintf("%s/dead-letters/consumer/%d", srv.URL, id)), visible("#dl-id"))
	noToken := run(b, chromedp.Evaluate[string](fmt.Sprintf(
		`fetch("/dead-letters/consumer/replay", {method: "POST", body: new URLSearchParams({id: "%d"})}).then(r => r.status + " " + r.statusText)`, id),
		chromedp.EvalAwaitPromise))
	if !strings.Contains(attacked, "refused") && !strings.Contains(attacked, "CSRF") {
		t.Errorf("cross-site form: %q", attacked)
	}
	if noToken != "403 Forbidden" {
		t.Errorf("POST without the CSRF token: %q, want 403", noToken)
	}
	res, err := http.PostForm(srv.URL+"/dead-letters/consumer/replay", url.Values{"id": {fmt.Sprint(id)}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST without credentials: %d, want 401", res.StatusCode)
	}
	if n := count(t, pool, "SELECT count(*) FROM "+pgx.Identifier{schema, "outbox"}.Sanitize()); n != 0 {
		t.Fatalf("refused requests enqueued %d rows", n)
	}

	// The fix is deployed; replay through the page.
	poison.Store(false)
	b.do(click("#replay"), visible("#confirm-action"))
	confirm := b.text("h1")
	shots.take(b, "console-confirm.png")
	b.do(click("#confirm-action"), visible("#result"))
	result := b.text("#result")
	if confirm != "Replay 1 dead letter?" || !strings.Contains(result, fmt.Sprintf("1 dead letter replayed: #%d", id)) {
		t.Fatalf("confirmation %q, result %q", confirm, result)
	}
	waitFor(t, "the replay applied", func() bool {
		return count(t, pool, "SELECT count(*) FROM "+payments+" WHERE token = '"+poisonToken+"'") > 0
	})
	// Exactly once, also after the consumer had time to apply a duplicate.
	time.Sleep(time.Second)
	if n := count(t, pool, "SELECT count(*) FROM "+payments+" WHERE token = '"+poisonToken+"'"); n != 1 {
		t.Fatalf("order-7 applied %d times, want 1", n)
	}
	if n := count(t, pool, "SELECT count(*) FROM "+payments); n != 12 {
		t.Fatalf("%d payments, want 12", n)
	}
	b.do(chromedp.Navigate(fmt.Sprintf("%s/dead-letters/consumer/%d", srv.URL, id)))
	state := b.text("#dl-state")
	if !strings.HasPrefix(state, "replayed") {
		t.Fatalf("dead letter state %q after the replay", state)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 60s for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func count(t *testing.T, pool interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, sql string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// shooter writes screenshots: into docs/ with UPDATE_SCREENSHOTS=1, else
// into a temporary directory (taken all the same, so that taking them is
// tested).
type shooter struct {
	t   *testing.T
	dir string
}

func screenshots(t *testing.T) shooter {
	if os.Getenv("UPDATE_SCREENSHOTS") != "" {
		return shooter{t, filepath.Join(services.RepoRoot(t), "docs")}
	}
	return shooter{t, t.TempDir()}
}

func (s shooter) take(p *page, name string) {
	s.t.Helper()
	png := run(p, chromedp.CaptureScreenshot())
	if err := os.WriteFile(filepath.Join(s.dir, name), png, 0o644); err != nil {
		s.t.Fatal(err)
	}
}
