package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"

	"github.com/exactlyhq/exactly/console"
	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/kafkatest"
	"github.com/exactlyhq/exactly/internal/pgtest"
	"github.com/exactlyhq/exactly/migrate"
	"github.com/exactlyhq/exactly/outbox"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	user     = "ops"
	password = "s3cret-Pa55"
	token    = "t0ken-for-scripts"
)

// bundle is a migrated schema with a console serving it.
type bundle struct {
	pool   *pgxpool.Pool
	schema string
	srv    *httptest.Server
	cfg    console.Config
}

func setup(t *testing.T, mod func(*console.Config)) *bundle {
	t.Helper()
	pool := pgtest.Pool(t)
	b := &bundle{pool: pool, schema: pgtest.Schema(t, pool)}
	cl, err := consumer.Migrations(consumer.Config{Inbox: inbox.Config{Schema: b.schema}})
	if err != nil {
		t.Fatal(err)
	}
	ol, err := outbox.Migrations(outbox.Config{Schema: b.schema})
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate.Up(context.Background(), pool, append(cl, ol)...); err != nil {
		t.Fatal(err)
	}
	b.cfg = console.Config{DB: pool, Schema: b.schema, Username: user, Password: password, Token: token,
		Brokers: kafkatest.Brokers(), Groups: []string{"console-" + b.schema}, PageSize: 3}
	if mod != nil {
		mod(&b.cfg)
	}
	c, err := console.New(b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.srv = httptest.NewServer(c)
	t.Cleanup(b.srv.Close)
	return b
}

// deadLetter writes a consumer dead letter and returns its id.
func (b *bundle) deadLetter(t *testing.T, scope, reason string, offset int, key string, headers map[string]string, value string) int64 {
	t.Helper()
	keys, values := []string{}, [][]byte{}
	for k, v := range headers {
		keys, values = append(keys, k), append(values, []byte(v))
	}
	var id int64
	err := b.pool.QueryRow(context.Background(), `INSERT INTO `+pgx.Identifier{b.schema, "dead_letters"}.Sanitize()+`
		(scope, token, reason, error, attempts, kafka_topic, kafka_partition, kafka_offset, kafka_key, kafka_value, header_keys, header_values)
		VALUES ($1, $2, $3, 'handler failed: <b>boom</b>', 3, 'orders', 0, $4, $5, $6, $7, $8) RETURNING id`,
		scope, headers["Idempotency-Key"], reason, offset, []byte(key), []byte(value), keys, values).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// client is a browser: it keeps cookies and signs in with basic
// authentication unless anonymous.
type client struct {
	t         *testing.T
	b         *bundle
	http      *http.Client
	anonymous bool
}

func (b *bundle) client(t *testing.T) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: t, b: b, http: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (c *client) do(method, path string, form url.Values, header ...string) (int, string) {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.b.srv.URL+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if !c.anonymous {
		req.SetBasicAuth(user, password)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	for _, secret := range []string{password, token} {
		if strings.Contains(string(out), secret) {
			c.t.Errorf("%s %s shows a secret: %s", method, path, out)
		}
	}
	return res.StatusCode, string(out)
}

func (c *client) get(path string) string {
	c.t.Helper()
	code, body := c.do("GET", path, nil)
	if code != http.StatusOK {
		c.t.Fatalf("GET %s: %d\n%s", path, code, body)
	}
	return body
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the token of the confirmation page's form.
func csrf(t *testing.T, page string) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token in the page:\n%s", page)
	}
	return m[1]
}

func (b *bundle) count(t *testing.T, sql string) int {
	t.Helper()
	var n int
	sql = strings.NewReplacer("OUTBOX", pgx.Identifier{b.schema, "outbox"}.Sanitize(), "DL", pgx.Identifier{b.schema, "dead_letters"}.Sanitize()).Replace(sql)
	if err := b.pool.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestAuthentication: every page and the API need credentials; wrong ones
// are refused; the basic-auth challenge makes a browser ask.
func TestAuthentication(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	anon := b.client(t)
	anon.anonymous = true
	for _, path := range []string{"/", "/dead-letters/consumer", "/api/overview", "/static/style.css", "/nowhere"} {
		code, _ := anon.do("GET", path, nil)
		if code != http.StatusUnauthorized {
			t.Errorf("GET %s without credentials: %d, want 401", path, code)
		}
	}
	code, _ := anon.do("GET", "/", nil, "Authorization", "Basic "+basic(user, "wrong"))
	if code != http.StatusUnauthorized {
		t.Errorf("wrong password: %d", code)
	}
	code, _ = anon.do("GET", "/api/overview", nil, "Authorization", "Bearer wrong")
	if code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d", code)
	}
	code, _ = anon.do("GET", "/api/overview", nil, "Authorization", "Bearer "+token)
	if code != http.StatusOK {
		t.Errorf("bearer token: %d", code)
	}
	res, err := http.Get(b.srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Basic ") || res.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("401 headers %v", res.Header)
	}
	if _, err := console.New(console.Config{DB: b.pool}); err == nil || !strings.Contains(err.Error(), "no authentication") {
		t.Errorf("New without authentication: %v", err)
	}
	if _, err := console.New(console.Config{DB: b.pool, Username: "ops"}); err == nil {
		t.Error("New with a user and no password")
	}
}

func basic(u, p string) string {
	r, _ := http.NewRequest("GET", "/", nil)
	r.SetBasicAuth(u, p)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}

// TestOverview: the overview names what needs a person (dead letters
// waiting, a shard no relay holds with rows in it) and serves the same as
// JSON; a group Kafka does not know is named.
func TestOverview(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	c := b.client(t)
	page := c.get("/")
	if !strings.Contains(page, `id="all-well"`) {
		t.Errorf("an empty pipeline needs a person:\n%s", page)
	}
	b.deadLetter(t, "payments", consumer.ReasonPermanent, 1, "order-1", nil, "{}")
	ob, err := outbox.New(outbox.Config{Schema: b.schema})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ob.Enqueue(context.Background(), b.pool, outbox.Message{Topic: "orders", Key: []byte("k")}); err != nil {
		t.Fatal(err)
	}
	page = c.get("/")
	for _, want := range []string{`id="attention"`, "1 dead letter of payments (permanent) waits", "no relay holds it, 1 rows wait", "console-" + b.schema} {
		if !strings.Contains(page, want) {
			t.Errorf("overview lacks %q:\n%s", want, page)
		}
	}
	var o struct {
		Attention []struct{ Text, Link string }
		Missing   []string `json:"missing_groups"`
		Outbox    struct {
			Backlog int64
			Shards  []struct {
				Shard   int
				Backlog int64
				Owned   bool
			}
		}
		DeadLetters []struct {
			Scope, Reason string
			Count         int64
		} `json:"dead_letters"`
	}
	if err := json.Unmarshal([]byte(c.get("/api/overview")), &o); err != nil {
		t.Fatal(err)
	}
	if len(o.Attention) != 2 || o.Outbox.Backlog != 1 || len(o.Outbox.Shards) != 4 || len(o.DeadLetters) != 1 || o.DeadLetters[0].Count != 1 ||
		len(o.Missing) != 1 || o.Attention[1].Link != "/dead-letters/consumer?reason=permanent&scope=payments" {
		t.Errorf("api/overview: %+v", o)
	}
}

// TestEscaping: a message whose key, headers and value hold markup is shown
// as text, on the list and on its page, and in the JSON as bytes.
func TestEscaping(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	const evil = `<script>alert("key")</script>`
	id := b.deadLetter(t, `<script>alert("scope")</script>`, consumer.ReasonHandlerError, 1, evil,
		map[string]string{"<script>h</script>": `<script>alert("header")</script>`, "Idempotency-Key": "order-1"}, `{"note": "<script>alert(1)</script>"}`)
	c := b.client(t)
	for _, path := range []string{"/", "/dead-letters/consumer", fmt.Sprintf("/dead-letters/consumer/%d", id)} {
		page := c.get(path)
		if strings.Contains(strings.ReplaceAll(page, `<script src=`, ``), "<script>") {
			t.Errorf("%s holds an unescaped <script>:\n%s", path, page)
		}
		if !strings.Contains(page, "&lt;script&gt;") {
			t.Errorf("%s does not show the markup as text:\n%s", path, page)
		}
	}
	page := c.get(fmt.Sprintf("/dead-letters/consumer/%d", id))
	for _, want := range []string{`&lt;script&gt;alert(&#34;header&#34;)&lt;/script&gt;`, `&lt;script&gt;h&lt;/script&gt;`,
		"handler failed: &lt;b&gt;boom&lt;/b&gt;", "json · 37 bytes", "{\n  &#34;note&#34;: &#34;&lt;script&gt;alert(1)&lt;/script&gt;&#34;\n}"} {
		if !strings.Contains(page, want) {
			t.Errorf("detail lacks %q:\n%s", want, page)
		}
	}
	var d struct {
		Key     []byte
		Headers []struct {
			Key   string
			Value []byte
		}
	}
	if err := json.Unmarshal([]byte(c.get(fmt.Sprintf("/api/dead-letters/consumer/%d", id))), &d); err != nil || string(d.Key) != evil || len(d.Headers) != 2 {
		t.Errorf("api detail: %+v, %v", d, err)
	}
}

// TestPayloads: text, JSON, binary as hex, and a cap on what is shown.
func TestPayloads(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *console.Config) { c.MaxShownBytes = 64 })
	c := b.client(t)
	bin := b.deadLetter(t, "g", consumer.ReasonUndecodable, 1, "\x00\xffkey", nil, "\x00\x01\x02binary\xff")
	long := b.deadLetter(t, "g", consumer.ReasonUndecodable, 2, "k", nil, strings.Repeat("é", 100))
	page := c.get(fmt.Sprintf("/dead-letters/consumer/%d", bin))
	if !strings.Contains(page, "00000000  00 01 02 62 69 6e 61 72  79 ff") || !strings.Contains(page, "binary · 10 bytes") || !strings.Contains(page, "|...binary.|") {
		t.Errorf("binary value not shown as hex:\n%s", page)
	}
	page = c.get(fmt.Sprintf("/dead-letters/consumer/%d", long))
	if !strings.Contains(page, "text · 200 bytes · cut") || !strings.Contains(page, strings.Repeat("é", 32)+"</pre>") {
		t.Errorf("long value not cut at 64 bytes:\n%s", page)
	}
	list := c.get("/dead-letters/consumer")
	if !strings.Contains(list, "0x00ff6b6579") {
		t.Errorf("binary key not shown in hex on the list:\n%s", list)
	}
}

// TestListPagesAndFilters: keyset pages newest first, filters, and the
// JSON list with its cursor.
func TestListPagesAndFilters(t *testing.T) {
	t.Parallel()
	b := setup(t, nil) // 3 per page
	var ids []int64
	for i := range 7 {
		reason := consumer.ReasonHandlerError
		if i%2 == 1 {
			reason = consumer.ReasonPermanent
		}
		ids = append(ids, b.deadLetter(t, "g"+strconv.Itoa(i%3), reason, i, "k"+strconv.Itoa(i), nil, "v"))
	}
	c := b.client(t)
	page := c.get("/dead-letters/consumer")
	older := regexp.MustCompile(`href="(/dead-letters/consumer\?before=\d+)" id="older"`).FindStringSubmatch(page)
	if older == nil || !strings.Contains(page, fmt.Sprintf(`/dead-letters/consumer/%d"`, ids[6])) || strings.Contains(page, fmt.Sprintf(`/dead-letters/consumer/%d"`, ids[3])) {
		t.Fatalf("first page:\n%s", page)
	}
	page = c.get(strings.ReplaceAll(older[1], "&amp;", "&"))
	if !strings.Contains(page, fmt.Sprintf(`/dead-letters/consumer/%d"`, ids[3])) || strings.Contains(page, fmt.Sprintf(`/dead-letters/consumer/%d"`, ids[4])) {
		t.Fatalf("second page:\n%s", page)
	}
	var res struct {
		DeadLetters []struct{ ID int64 } `json:"dead_letters"`
		Next        int64                `json:"next_before"`
	}
	if err := json.Unmarshal([]byte(c.get("/api/dead-letters/consumer?reason=permanent&limit=2")), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.DeadLetters) != 2 || res.DeadLetters[0].ID != ids[5] || res.Next != ids[3] {
		t.Fatalf("api page: %+v", res)
	}
	next := res.Next
	res.Next = 0
	if err := json.Unmarshal([]byte(c.get(fmt.Sprintf("/api/dead-letters/consumer?reason=permanent&limit=2&before=%d", next))), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.DeadLetters) != 1 || res.DeadLetters[0].ID != ids[1] || res.Next != 0 {
		t.Fatalf("api second page: %+v", res)
	}
	if n := strings.Count(c.get("/dead-letters/consumer?scope=g1"), `class="dl-link"`); n != 2 {
		t.Errorf("scope g1: %d rows, want 2", n)
	}
	for _, bad := range []string{"?state=gone", "?before=x", "?since=yesterday", "?limit=9999"} {
		if code, _ := c.do("GET", "/dead-letters/consumer"+bad, nil); code != http.StatusBadRequest {
			t.Errorf("list %s: %d, want 400", bad, code)
		}
	}
	if code, _ := c.do("GET", "/dead-letters/outbox?scope=g1", nil); code != http.StatusBadRequest {
		t.Errorf("outbox by scope: %d", code)
	}
	if code, _ := c.do("GET", "/dead-letters/consumer/999999", nil); code != http.StatusNotFound {
		t.Errorf("missing dead letter: %d", code)
	}
	if code, _ := c.do("GET", "/dead-letters/elsewhere", nil); code != http.StatusNotFound {
		t.Errorf("unknown kind: %d", code)
	}
}

// TestReplayNeedsConfirmationAndCSRF: a replay is confirmed on a page whose
// form carries the CSRF token; a POST without it, with another browser's,
// from another origin or without credentials is refused and changes
// nothing; the confirmed replay enqueues the message once, and a second
// POST of the same form enqueues nothing more.
func TestReplayNeedsConfirmationAndCSRF(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	id := b.deadLetter(t, "payments", consumer.ReasonPermanent, 1, "order-1", map[string]string{"Idempotency-Key": "order-1"}, "v")
	c := b.client(t)
	detail := c.get(fmt.Sprintf("/dead-letters/consumer/%d", id))
	if !strings.Contains(detail, `id="replay"`) {
		t.Fatalf("no replay button:\n%s", detail)
	}
	confirm := c.get(fmt.Sprintf("/dead-letters/consumer/confirm?action=replay&id=%d", id))
	if !strings.Contains(confirm, "Replay 1 dead letter?") {
		t.Fatalf("confirmation page:\n%s", confirm)
	}
	tok := csrf(t, confirm)
	form := url.Values{"id": {strconv.FormatInt(id, 10)}}

	other := b.client(t) // another browser: its own cookie
	other.get("/")
	anon := b.client(t)
	anon.anonymous = true
	for _, tc := range []struct {
		name   string
		c      *client
		form   url.Values
		header []string
		want   int
	}{
		{"no token", c, form, nil, http.StatusForbidden},
		{"wrong token", c, with(form, "csrf", "00"+tok[2:]), nil, http.StatusForbidden},
		{"another browser's cookie", other, with(form, "csrf", tok), nil, http.StatusForbidden},
		{"no credentials", anon, with(form, "csrf", tok), nil, http.StatusUnauthorized},
		{"cross-site", c, with(form, "csrf", tok), []string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
		{"another origin", c, with(form, "csrf", tok), []string{"Origin", "https://evil.example"}, http.StatusForbidden},
	} {
		if code, _ := tc.c.do("POST", "/dead-letters/consumer/replay", tc.form, tc.header...); code != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, code, tc.want)
		}
		if code, _ := tc.c.do("POST", "/api/dead-letters/consumer/replay", tc.form, tc.header...); code != tc.want {
			t.Errorf("api, %s: %d, want %d", tc.name, code, tc.want)
		}
	}
	if n := b.count(t, "SELECT count(*) FROM OUTBOX"); n != 0 {
		t.Fatalf("refused requests enqueued %d rows", n)
	}

	code, result := c.do("POST", "/dead-letters/consumer/replay", with(form, "csrf", tok))
	if code != http.StatusOK || !strings.Contains(result, fmt.Sprintf("1 dead letter replayed: <a href=\"/dead-letters/consumer/%d\">#%d</a>", id, id)) {
		t.Fatalf("replay: %d\n%s", code, result)
	}
	code, result = c.do("POST", "/dead-letters/consumer/replay", with(form, "csrf", tok))
	if code != http.StatusOK || !strings.Contains(result, "0 dead letters replayed") {
		t.Fatalf("second replay: %d\n%s", code, result)
	}
	if n := b.count(t, "SELECT count(*) FROM OUTBOX WHERE headers @> '[{\"key\": \"Idempotency-Key\"}]'"); n != 1 {
		t.Fatalf("outbox holds %d replays, want 1", n)
	}
	if n := b.count(t, "SELECT count(*) FROM DL WHERE resolution = 'replayed'"); n != 1 {
		t.Fatalf("%d dead letters marked replayed", n)
	}
	if detail := c.get(fmt.Sprintf("/dead-letters/consumer/%d", id)); strings.Contains(detail, `id="replay"`) || !strings.Contains(detail, "<strong>replayed</strong>") {
		t.Errorf("a replayed dead letter offers a replay:\n%s", detail)
	}
}

func with(v url.Values, kv ...string) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out.Set(kv[i], kv[i+1])
	}
	return out
}

// TestSelectionByFilter: "discard all" of a filter takes the dead letters
// up to the newest shown on the confirmation page: one written after it is
// left alone.
func TestSelectionByFilter(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	for i := range 3 {
		b.deadLetter(t, "g", consumer.ReasonTokenConflict, i, "k", nil, "v")
	}
	b.deadLetter(t, "g", consumer.ReasonPermanent, 3, "k", nil, "v")
	c := b.client(t)
	confirm := c.get("/dead-letters/consumer/confirm?action=discard&reason=token_conflict&since=1h")
	if !strings.Contains(confirm, "Discard 3 dead letters?") {
		t.Fatalf("confirmation:\n%s", confirm)
	}
	form := url.Values{"csrf": {csrf(t, confirm)}}
	for _, name := range []string{"reason", "since", "through"} {
		m := regexp.MustCompile(`name="` + name + `" value="([^"]*)"`).FindStringSubmatch(confirm)
		if m == nil {
			t.Fatalf("no %s in the form", name)
		}
		form.Set(name, m[1])
	}
	late := b.deadLetter(t, "g", consumer.ReasonTokenConflict, 4, "k", nil, "v")
	code, result := c.do("POST", "/dead-letters/consumer/discard", form)
	if code != http.StatusOK || !strings.Contains(result, "3 dead letters discarded") {
		t.Fatalf("discard: %d\n%s", code, result)
	}
	if n := b.count(t, fmt.Sprintf("SELECT count(*) FROM DL WHERE resolved_at IS NULL AND id IN (%d) ", late)); n != 1 {
		t.Error("the dead letter written after the confirmation was discarded")
	}
	if n := b.count(t, "SELECT count(*) FROM DL WHERE resolved_at IS NULL"); n != 2 {
		t.Errorf("%d unresolved, want the permanent one and the late one", n)
	}
	if n := b.count(t, "SELECT count(*) FROM OUTBOX"); n != 0 {
		t.Errorf("a discard enqueued %d rows", n)
	}
	// The API: a bearer token needs no CSRF token; a selection needs a filter or ids.
	anon := b.client(t)
	anon.anonymous = true
	code, out := anon.do("POST", "/api/dead-letters/consumer/discard", url.Values{}, "Authorization", "Bearer "+token)
	if code != http.StatusBadRequest {
		t.Errorf("api discard without a selection: %d %s", code, out)
	}
	code, out = anon.do("POST", "/api/dead-letters/consumer/discard", url.Values{"reason": {"permanent"}}, "Authorization", "Bearer "+token)
	var res struct {
		Done     []int64
		Selected int
	}
	if err := json.Unmarshal([]byte(out), &res); code != http.StatusOK || err != nil || len(res.Done) != 1 || res.Selected != 1 {
		t.Errorf("api discard: %d %s", code, out)
	}
}

// TestReadOnly: no action is offered, and none is done.
func TestReadOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *console.Config) { c.ReadOnly = true })
	id := b.deadLetter(t, "g", consumer.ReasonPermanent, 1, "k", nil, "v")
	c := b.client(t)
	for _, path := range []string{"/dead-letters/consumer", fmt.Sprintf("/dead-letters/consumer/%d", id)} {
		page := c.get(path)
		if strings.Contains(page, "Replay") || strings.Contains(page, "Discard") || !strings.Contains(page, `id="read-only"`) {
			t.Errorf("%s offers actions read-only:\n%s", path, page)
		}
	}
	if code, _ := c.do("GET", fmt.Sprintf("/dead-letters/consumer/confirm?action=replay&id=%d", id), nil); code != http.StatusForbidden {
		t.Errorf("confirmation page read-only: %d", code)
	}
	code, _ := c.do("POST", "/api/dead-letters/consumer/replay", url.Values{"id": {strconv.FormatInt(id, 10)}}, "Authorization", "Bearer "+token)
	if code != http.StatusForbidden {
		t.Errorf("replay read-only: %d", code)
	}
	if n := b.count(t, "SELECT count(*) FROM DL WHERE resolved_at IS NULL"); n != 1 {
		t.Error("read-only console resolved a dead letter")
	}
}

// TestNotMigrated: a schema without the tables says what to do.
func TestNotMigrated(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	c, err := console.New(console.Config{DB: pool, Schema: pgtest.Schema(t, pool), Token: token})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c)
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), "exactly migrate up") {
		t.Errorf("unmigrated: %d %s", res.StatusCode, body)
	}
}

// TestOverviewOutboxAndKafka: keys blocked by a row Kafka rejected, with the
// rows held back behind them; a group with lag and no members; and a
// partition whose committed offset has not moved for StallAfter.
func TestOverviewOutboxAndKafka(t *testing.T) {
	t.Parallel()
	topic := kafkatest.Topic(t, 1)
	var group string
	b := setup(t, func(c *console.Config) {
		group = "stalled-" + c.Schema
		c.Groups, c.StallAfter = []string{group}, time.Millisecond
	})
	ctx := context.Background()

	// Outbox: key k's oldest row was rejected; two later rows of k wait.
	ob, err := outbox.New(outbox.Config{Schema: b.schema})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := ob.Enqueue(ctx, b.pool, outbox.Message{Topic: "orders", Key: []byte("k")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.pool.Exec(ctx, "UPDATE "+pgx.Identifier{b.schema, "outbox"}.Sanitize()+" SET rejections = 1 WHERE id = (SELECT min(id) FROM "+pgx.Identifier{b.schema, "outbox"}.Sanitize()+")"); err != nil {
		t.Fatal(err)
	}

	// Kafka: the group committed 2 of 5 messages and has no member.
	kafkatest.Produce(t, kafkatest.Writer(t, topic), kafka.Message{Value: []byte("1")}, kafka.Message{Value: []byte("2")},
		kafka.Message{Value: []byte("3")}, kafka.Message{Value: []byte("4")}, kafka.Message{Value: []byte("5")})
	commit(t, group, topic, 2)

	c := b.client(t)
	var o struct {
		Attention []struct{ Text string }
		Groups    []struct {
			Group      string
			Lag        int64
			Members    []any
			Partitions []struct {
				Committed, End, Lag int64
				Stalled             bool
			}
		}
		Outbox struct {
			Shards []struct {
				Shard       int
				BlockedKeys int64 `json:"blocked_keys"`
				HeldBack    int64 `json:"held_back"`
			}
		}
	}
	for range 2 { // the second look finds the offset where the first saw it
		time.Sleep(2 * time.Millisecond)
		if err := json.Unmarshal([]byte(c.get("/api/overview")), &o); err != nil {
			t.Fatal(err)
		}
	}
	var text []string
	for _, a := range o.Attention {
		text = append(text, a.Text)
	}
	all := strings.Join(text, "\n")
	if !strings.Contains(all, "1 key blocked by a row Kafka rejected, 2 later rows held back behind it") ||
		!strings.Contains(all, "group "+group+" has no members and a lag of 3") {
		t.Errorf("attention:\n%s", all)
	}
	if len(o.Groups) != 1 || o.Groups[0].Lag != 3 || len(o.Groups[0].Partitions) != 1 || !o.Groups[0].Partitions[0].Stalled ||
		o.Groups[0].Partitions[0].Committed != 2 || o.Groups[0].Partitions[0].End != 5 {
		t.Errorf("groups: %+v", o.Groups)
	}
	blocked := 0
	for _, s := range o.Outbox.Shards {
		if s.BlockedKeys == 1 && s.HeldBack == 2 {
			blocked++
		}
	}
	if blocked != 1 {
		t.Errorf("shards: %+v", o.Outbox.Shards)
	}
	page := c.get("/")
	if !strings.Contains(page, "stalled") || !strings.Contains(page, "1 (2 rows held back)") {
		t.Errorf("overview page:\n%s", page)
	}
}

// commit commits offset for group in partition 0 of topic, as a consumer
// that processed the messages before it would.
func commit(t *testing.T, group, topic string, offset int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(kafkatest.Brokers()...), Transport: &kafka.Transport{}}
	defer client.Transport.(*kafka.Transport).CloseIdleConnections()
	res, err := client.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: group, GenerationID: -1,
		Topics: map[string][]kafka.OffsetCommit{topic: {{Partition: 0, Offset: offset}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, ps := range res.Topics {
		for _, p := range ps {
			if p.Error != nil {
				t.Fatal(p.Error)
			}
		}
	}
}
