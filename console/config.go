package console

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
	"github.com/exactlyhq/exactly/outbox"
)

// Defaults of Config.
const (
	PathDefault            = "/"
	PageSizeDefault        = 50
	MaxShownBytesDefault   = 64 << 10
	RefreshIntervalDefault = 5 * time.Second
	StallAfterDefault      = time.Minute
	BacklogAgeAlertDefault = time.Minute
	KafkaTimeoutDefault    = 5 * time.Second
)

// MaxSelection is the most dead letters one action replays or discards:
// a filter that selects more is worked through in several actions, each
// confirmed with its count, as `exactly dead-letters replay -limit`.
const MaxSelection = 1000

// Config configures a Console. The tables are named as in the CLI and the
// packages' own configurations; Shards must be the writers'
// outbox.Config.Shards, since replays go through the outbox.
//
// Authentication is required: set Username and Password (HTTP basic
// authentication, what a browser asks for), Token (a bearer token, for
// scripts), or Authenticate (the embedding application's own check, such as
// its session). Any of them admits a request.
type Config struct {
	// DB holds the tables. Required.
	DB exactly.DB
	// Schema of the tables. Defaults to inbox.SchemaDefault.
	Schema string
	// InboxTable is the consumers' inbox. Defaults to inbox.TableDefault.
	InboxTable string
	// DeadLetterTable is the consumers' dead letters. Defaults to
	// consumer.DeadLetterTableDefault.
	DeadLetterTable string
	// OutboxTable is the outbox replays go through; its dead letters are
	// OutboxTable_dead_letters. Defaults to outbox.TableDefault.
	OutboxTable string
	// Shards is the writers' outbox.Config.Shards. Defaults to
	// outbox.ShardsDefault.
	Shards int

	// Brokers are the Kafka brokers the overview reads consumer groups from
	// (members, lag). Empty: the overview shows no Kafka.
	Brokers []string
	// Transport connects to Brokers (TLS, SASL); the console closes its
	// idle connections after each read. Defaults to a transport of its own.
	Transport *kafka.Transport
	// Groups are the consumer groups the overview shows. Defaults to the
	// inbox's scopes, as `exactly status` does.
	Groups []string
	// KafkaTimeout bounds what the overview waits for Kafka. Defaults to
	// 5s.
	KafkaTimeout time.Duration

	// Username and Password admit requests with HTTP basic authentication.
	// Both or neither.
	Username, Password string
	// Token admits requests with "Authorization: Bearer Token". Such
	// requests need no CSRF token: a browser never adds the header itself.
	Token string
	// Authenticate admits the requests for which it returns true: the
	// embedding application's own authentication (its session cookie, or a
	// value its middleware put in the request's context). Return true for
	// every request only when a middleware in front of the console already
	// refuses the others.
	Authenticate func(*http.Request) bool

	// ReadOnly hides every action (replay, discard) and refuses them.
	ReadOnly bool
	// Path is where the console is mounted, with a trailing slash: its
	// links and cookie are under it. Mount the handler at Path itself
	// (mux.Handle(cfg.Path, c)), not behind http.StripPrefix. Defaults to
	// "/".
	Path string
	// PageSize is how many dead letters a page lists. Defaults to 50.
	PageSize int
	// MaxShownBytes caps how much of a key, value or header a page shows.
	// Defaults to 64 KiB.
	MaxShownBytes int
	// RefreshInterval is how often the overview reloads itself in the
	// browser; -1 never. Defaults to 5s.
	RefreshInterval time.Duration
	// StallAfter is how long a partition's committed offset may stay put
	// while it has lag before the overview shows it stalled, judged from
	// the console's own samples. Defaults to 1m.
	StallAfter time.Duration
	// BacklogAgeAlert is the age of the oldest unpublished outbox row at
	// which the overview shows its shard in red. Defaults to 1m.
	BacklogAgeAlert time.Duration
	// Logger logs failed requests and actions. Defaults to slog.Default().
	Logger *slog.Logger
}

// withDefaults returns a copy of cfg with defaults applied.
func (cfg Config) withDefaults() Config {
	cfg.Schema = cmp.Or(cfg.Schema, inbox.SchemaDefault)
	cfg.InboxTable = cmp.Or(cfg.InboxTable, inbox.TableDefault)
	cfg.DeadLetterTable = cmp.Or(cfg.DeadLetterTable, consumer.DeadLetterTableDefault)
	cfg.OutboxTable = cmp.Or(cfg.OutboxTable, outbox.TableDefault)
	cfg.Shards = cmp.Or(cfg.Shards, outbox.ShardsDefault)
	cfg.KafkaTimeout = cmp.Or(cfg.KafkaTimeout, KafkaTimeoutDefault)
	cfg.Path = cmp.Or(cfg.Path, PathDefault)
	cfg.PageSize = cmp.Or(cfg.PageSize, PageSizeDefault)
	cfg.MaxShownBytes = cmp.Or(cfg.MaxShownBytes, MaxShownBytesDefault)
	cfg.RefreshInterval = cmp.Or(cfg.RefreshInterval, RefreshIntervalDefault)
	cfg.StallAfter = cmp.Or(cfg.StallAfter, StallAfterDefault)
	cfg.BacklogAgeAlert = cmp.Or(cfg.BacklogAgeAlert, BacklogAgeAlertDefault)
	cfg.Groups = append([]string(nil), cfg.Groups...)
	cfg.Brokers = append([]string(nil), cfg.Brokers...)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg
}

func (cfg Config) validate() error {
	switch {
	case cfg.DB == nil:
		return errors.New("console: Config.DB is required")
	case cfg.Username == "" && cfg.Password == "" && cfg.Token == "" && cfg.Authenticate == nil:
		return errors.New("console: no authentication: set Config.Username and Password, Config.Token or Config.Authenticate")
	case (cfg.Username == "") != (cfg.Password == ""):
		return errors.New("console: Config.Username and Config.Password go together")
	case strings.Contains(cfg.Username, ":"):
		return errors.New("console: Config.Username cannot hold a colon (HTTP basic authentication)")
	case !strings.HasPrefix(cfg.Path, "/") || !strings.HasSuffix(cfg.Path, "/"):
		return fmt.Errorf("console: Config.Path %q must begin and end with a slash", cfg.Path)
	case cfg.Shards < 1:
		return fmt.Errorf("console: Config.Shards %d is not positive", cfg.Shards)
	case cfg.PageSize < 1 || cfg.PageSize > 500:
		return fmt.Errorf("console: Config.PageSize %d is not within 1..500", cfg.PageSize)
	case cfg.MaxShownBytes < 1:
		return fmt.Errorf("console: Config.MaxShownBytes %d is not positive", cfg.MaxShownBytes)
	case cfg.RefreshInterval < -1 || cfg.RefreshInterval > 0 && cfg.RefreshInterval < time.Second:
		return fmt.Errorf("console: Config.RefreshInterval %s is below 1s", cfg.RefreshInterval)
	case cfg.StallAfter < 0 || cfg.BacklogAgeAlert < 0 || cfg.KafkaTimeout < 0:
		return errors.New("console: Config.StallAfter, BacklogAgeAlert and KafkaTimeout cannot be negative")
	}
	return nil
}
