package console

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/internal/deadletter"
	"github.com/exactlyhq/exactly/internal/sqltmpl"
)

// Console is the operator console: an http.Handler serving its pages, its
// JSON API and its assets under Config.Path.
type Console struct {
	cfg       Config
	dl        *deadletter.Store
	inbox     *inbox.Store
	kafka     *kafka.Client    // nil without Config.Brokers
	transport *kafka.Transport // kafka's; its connections are closed after each read
	sql       queries
	csrfKey   []byte
	cross     *http.CrossOriginProtection
	mux       *http.ServeMux

	mu       sync.Mutex
	progress map[partitionKey]mark // committed offsets as last seen, for stalls
}

//go:embed sql/*.sql
var queryFS embed.FS

type queries struct {
	HeldBack string `sql:"held_back"`
}

//go:embed static
var staticFS embed.FS

// New returns a Console of the tables cfg names. It reads nothing yet: a
// database that is not migrated, or Kafka that is down, shows in the pages.
func New(cfg Config) (*Console, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	dl, err := deadletter.New(cfg.DB, deadletter.Config{Schema: cfg.Schema, DeadLetterTable: cfg.DeadLetterTable,
		OutboxTable: cfg.OutboxTable, Shards: cfg.Shards, ShardsSetting: "the console's shards (-shards, console.Config.Shards)"})
	if err != nil {
		return nil, err
	}
	ib, err := inbox.New(cfg.DB, inbox.Config{Schema: cfg.Schema, Table: cfg.InboxTable})
	if err != nil {
		return nil, err
	}
	c := &Console{cfg: cfg, dl: dl, inbox: ib, csrfKey: make([]byte, 32), cross: http.NewCrossOriginProtection(),
		progress: map[partitionKey]mark{}}
	_, _ = rand.Read(c.csrfKey)
	if len(cfg.Brokers) > 0 {
		c.transport = cfg.Transport
		if c.transport == nil {
			c.transport = &kafka.Transport{}
		}
		c.kafka = &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Timeout: cfg.KafkaTimeout, Transport: c.transport}
	}
	if err := sqltmpl.Load(queryFS, "sql", map[string]string{
		"Outbox": pgx.Identifier{cfg.Schema, cfg.OutboxTable}.Sanitize(),
	}, &c.sql); err != nil {
		return nil, err
	}
	c.routes()
	return c, nil
}

func (c *Console) routes() {
	p := c.cfg.Path
	m := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	m.Handle("GET "+p+"static/", http.StripPrefix(p+"static/", http.FileServerFS(static)))
	m.HandleFunc("GET "+p+"{$}", c.overviewPage)
	m.HandleFunc("GET "+p+"dead-letters/{kind}", c.listPage)
	m.HandleFunc("GET "+p+"dead-letters/{kind}/{id}", c.detailPage)
	m.HandleFunc("GET "+p+"dead-letters/{kind}/confirm", c.confirmPage)
	m.HandleFunc("POST "+p+"dead-letters/{kind}/{action}", c.actionPage)
	m.HandleFunc("GET "+p+"api/overview", c.overviewAPI)
	m.HandleFunc("GET "+p+"api/session", c.sessionAPI)
	m.HandleFunc("GET "+p+"api/dead-letters/{kind}", c.listAPI)
	m.HandleFunc("GET "+p+"api/dead-letters/{kind}/{id}", c.detailAPI)
	m.HandleFunc("POST "+p+"api/dead-letters/{kind}/{action}", c.actionAPI)
	m.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) { c.fail(w, r, http.StatusNotFound, "no such page") })
	c.mux = m
}

type whoKey struct{}

// ServeHTTP authenticates the request, checks a POST's origin and CSRF
// token, and serves it.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	u, ok := c.authenticate(r)
	if !ok {
		c.unauthorized(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		switch {
		case c.cfg.ReadOnly:
			c.fail(w, r, http.StatusForbidden, "the console is read-only")
			return
		case c.cross.Check(r) != nil:
			c.fail(w, r, http.StatusForbidden, "cross-origin request refused")
			return
		case !c.checkCSRF(r, u):
			c.fail(w, r, http.StatusForbidden, "missing or wrong CSRF token: reload the page and try again")
			return
		}
	}
	c.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), whoKey{}, u)))
}

func whoOf(r *http.Request) who {
	u, _ := r.Context().Value(whoKey{}).(who)
	return u
}

// isAPI reports whether r asks for JSON.
func (c *Console) isAPI(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, c.cfg.Path+"api/")
}

// fail answers r with an error: JSON for the API, a page otherwise.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	if c.isAPI(r) {
		writeJSON(w, status, map[string]string{"error": msg})
		return
	}
	c.render(w, r, status, "error", page{Title: http.StatusText(status), Data: msg})
}

// failErr answers r with err, logged; a missing table is named as a
// database that needs migrating.
func (c *Console) failErr(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusInternalServerError, err.Error()
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, deadletter.ErrNotFound):
		status = http.StatusNotFound
	case errors.As(err, &pgErr) && pgErr.Code == "42P01": // undefined_table
		msg = "the database is not migrated (" + pgErr.Message + "): run `exactly migrate up`"
	case errors.Is(err, context.Canceled):
		return // the client went away
	}
	if status >= 500 {
		c.cfg.Logger.Error("console: request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	c.fail(w, r, status, msg)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
