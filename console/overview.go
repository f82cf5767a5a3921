package console

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/exactlyhq/exactly/internal/deadletter"
	"github.com/exactlyhq/exactly/internal/kafkagroup"
	"github.com/exactlyhq/exactly/outbox"
)

// overview is the state of the pipeline on one page, and GET api/overview.
type overview struct {
	Time time.Time `json:"time"`
	// Attention lists what needs a person, most urgent first; empty when
	// all is well.
	Attention []attention `json:"attention"`
	// Groups are the consumer groups as Kafka sees them; nil without
	// Config.Brokers.
	Groups     []group  `json:"groups"`
	KafkaError string   `json:"kafka_error,omitempty"`
	Missing    []string `json:"missing_groups,omitempty"` // asked for, unknown to Kafka
	Inbox      []scope  `json:"inbox"`
	Outbox     outboxes `json:"outbox"`
	// DeadLetters and OutboxDeadLetters count the unresolved dead letters.
	DeadLetters       []deadletter.Count `json:"dead_letters"`
	OutboxDeadLetters []deadletter.Count `json:"outbox_dead_letters"`
}

// attention is one thing that needs a person.
type attention struct {
	Text string `json:"text"`
	Link string `json:"link,omitempty"` // a page of the console about it
}

type group struct {
	Group      string              `json:"group"`
	State      string              `json:"state"`
	Members    []kafkagroup.Member `json:"members"`
	Lag        int64               `json:"lag"`
	Partitions []partition         `json:"partitions"`
}

type partition struct {
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Committed int64  `json:"committed"` // -1: nothing committed
	End       int64  `json:"end"`
	Lag       int64  `json:"lag"`
	// Unmoved is since when the console has seen the committed offset
	// where it is.
	Unmoved time.Time `json:"unmoved_since"`
	// Stalled: the partition has lag and its committed offset has not
	// moved for Config.StallAfter.
	Stalled bool `json:"stalled"`
}

type scope struct {
	Scope  string    `json:"scope"`
	Tokens int64     `json:"tokens"`
	Oldest time.Time `json:"oldest,omitzero"`
}

type outboxes struct {
	Table   string  `json:"table"`
	Backlog int64   `json:"backlog"`
	Shards  []shard `json:"shards"`
}

type shard struct {
	Shard   int       `json:"shard"`
	Backlog int64     `json:"backlog"` // rows waiting to be published
	Oldest  time.Time `json:"oldest,omitzero"`
	Owned   bool      `json:"owned"`   // a relay holds it
	Outside bool      `json:"outside"` // at or above Config.Shards: written by writers with more shards
	// BlockedKeys are keys whose oldest row Kafka rejected and the relay
	// retries; HeldBack are their later rows, waiting behind it.
	BlockedKeys int64 `json:"blocked_keys"`
	HeldBack    int64 `json:"held_back"`
	// Old: its oldest row waited Config.BacklogAgeAlert or longer.
	Old bool `json:"old"`
}

// partitionKey names a partition of a group, and mark the committed offset
// the console saw there and since when.
type (
	partitionKey struct {
		group, topic string
		partition    int
	}
	mark struct {
		committed int64
		since     time.Time
	}
)

func (c *Console) overview(ctx context.Context) (*overview, error) {
	o := &overview{Time: time.Now(), Outbox: outboxes{Table: c.cfg.Schema + "." + c.cfg.OutboxTable}}
	scopes, err := c.inbox.Scopes(ctx)
	if err != nil {
		return nil, err
	}
	o.Inbox = []scope{}
	for _, sc := range scopes {
		st, err := c.inbox.WithScope(sc).Stats(ctx)
		if err != nil {
			return nil, err
		}
		o.Inbox = append(o.Inbox, scope{Scope: st.Scope, Tokens: st.Tokens, Oldest: st.Oldest})
	}
	if err := c.outboxShards(ctx, o); err != nil {
		return nil, err
	}
	if o.DeadLetters, err = c.dl.ConsumerSummary(ctx); err != nil {
		return nil, err
	}
	if o.OutboxDeadLetters, err = c.dl.OutboxSummary(ctx); err != nil {
		return nil, err
	}
	if c.kafka != nil {
		groups := c.cfg.Groups
		if len(groups) == 0 {
			groups = scopes
		}
		c.groups(ctx, o, groups)
	}
	o.Attention = c.attention(o)
	return o, nil
}

func (c *Console) outboxShards(ctx context.Context, o *overview) error {
	st, err := outbox.Shards(ctx, c.cfg.DB, outbox.Config{Schema: c.cfg.Schema, Table: c.cfg.OutboxTable, Shards: c.cfg.Shards})
	if err != nil {
		return err
	}
	for _, s := range st {
		o.Outbox.Backlog += s.Backlog
		o.Outbox.Shards = append(o.Outbox.Shards, shard{Shard: s.Shard, Backlog: s.Backlog, Oldest: s.Oldest, Owned: s.Owned, Outside: s.Outside,
			Old: s.Backlog > 0 && !s.Oldest.IsZero() && o.Time.Sub(s.Oldest) >= c.cfg.BacklogAgeAlert})
	}
	rows, err := c.cfg.DB.Query(ctx, c.sql.HeldBack)
	if err != nil {
		return err
	}
	var n, keys, held int64
	_, err = pgx.ForEachRow(rows, []any{&n, &keys, &held}, func() error {
		for i := range o.Outbox.Shards {
			if int64(o.Outbox.Shards[i].Shard) == n {
				o.Outbox.Shards[i].BlockedKeys, o.Outbox.Shards[i].HeldBack = keys, held
			}
		}
		return nil
	})
	return err
}

// groups reads the groups from Kafka and judges each partition's progress
// against what the console saw before.
func (c *Console) groups(ctx context.Context, o *overview, names []string) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.KafkaTimeout)
	defer cancel()
	// No connection outlives the read: the console starts no goroutine
	// that runs on between requests.
	defer c.transport.CloseIdleConnections()
	gs, err := kafkagroup.Describe(ctx, c.kafka, names)
	if err != nil {
		o.KafkaError = err.Error()
	}
	o.Groups = []group{}
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[partitionKey]bool{}
	for _, g := range gs {
		v := group{Group: g.ID, State: g.State, Members: g.Members, Partitions: []partition{}}
		for _, p := range g.Partitions {
			k := partitionKey{g.ID, p.Topic, p.Partition}
			seen[k] = true
			m, ok := c.progress[k]
			if !ok || m.committed != p.Committed {
				m = mark{committed: p.Committed, since: o.Time}
				c.progress[k] = m
			}
			v.Lag += p.Lag
			v.Partitions = append(v.Partitions, partition{Topic: p.Topic, Partition: p.Partition, Committed: p.Committed, End: p.End, Lag: p.Lag, Unmoved: m.since,
				Stalled: p.Lag > 0 && o.Time.Sub(m.since) >= c.cfg.StallAfter})
		}
		o.Groups = append(o.Groups, v)
	}
	if err == nil {
		for k := range c.progress {
			if !seen[k] {
				delete(c.progress, k)
			}
		}
	}
	for _, n := range names {
		if !slices.ContainsFunc(gs, func(g kafkagroup.Group) bool { return g.ID == n }) && err == nil {
			o.Missing = append(o.Missing, n)
		}
	}
}

// attention lists what needs a person.
func (c *Console) attention(o *overview) []attention {
	out := []attention{}
	add := func(link, format string, args ...any) {
		out = append(out, attention{Text: fmt.Sprintf(format, args...), Link: link})
	}
	p := c.cfg.Path
	for _, s := range o.Outbox.Shards {
		switch {
		case s.Outside && s.Backlog > 0:
			add(p, "outbox shard %d holds %d rows, but relays configured with %d shards never publish it: writers use more shards than the relays", s.Shard, s.Backlog, c.cfg.Shards)
		case !s.Owned && s.Backlog > 0:
			add(p, "outbox shard %d: no relay holds it, %d rows wait (oldest %s)", s.Shard, s.Backlog, ago(s.Oldest))
		case s.Old:
			add(p, "outbox shard %d: its oldest row has waited since %s: the relay is stalled or Kafka refuses it", s.Shard, ago(s.Oldest))
		}
		if s.BlockedKeys > 0 {
			add(p, "outbox shard %d: %d %s blocked by a row Kafka rejected, %d later %s held back behind it",
				s.Shard, s.BlockedKeys, plural(int(s.BlockedKeys), "key", "keys"), s.HeldBack, plural(int(s.HeldBack), "row", "rows"))
		}
	}
	if o.KafkaError != "" {
		add(p, "Kafka: %s", o.KafkaError)
	}
	for _, g := range o.Groups {
		if len(g.Members) == 0 && g.Lag > 0 {
			add(p, "group %s has no members and a lag of %d", g.Group, g.Lag)
			continue
		}
		for _, pt := range g.Partitions {
			if pt.Stalled {
				add(p, "group %s: %s/%d has a lag of %d and its offset has not moved for %s", g.Group, pt.Topic, pt.Partition, pt.Lag, age(o.Time.Sub(pt.Unmoved)))
			}
		}
	}
	for _, d := range o.DeadLetters {
		add(p+"dead-letters/consumer"+query("scope", d.Scope, "reason", d.Reason),
			"%d %s of %s (%s) %s, the newest %s", d.Count, plural(int(d.Count), "dead letter", "dead letters"), d.Scope, d.Reason,
			plural(int(d.Count), "waits", "wait"), ago(d.Newest))
	}
	for _, d := range o.OutboxDeadLetters {
		add(p+"dead-letters/outbox"+query("reason", d.Reason),
			"%d outbox %s (%s) %s, the newest %s", d.Count, plural(int(d.Count), "dead letter", "dead letters"), d.Reason,
			plural(int(d.Count), "waits", "wait"), ago(d.Newest))
	}
	return out
}

func (c *Console) overviewPage(w http.ResponseWriter, r *http.Request) {
	o, err := c.overview(r.Context())
	if err != nil {
		c.failErr(w, r, err)
		return
	}
	refresh := 0
	if c.cfg.RefreshInterval > 0 {
		refresh = int(c.cfg.RefreshInterval / time.Second)
	}
	c.render(w, r, http.StatusOK, "overview", page{Title: "Overview", Nav: "overview", Refresh: refresh, Data: o})
}

func (c *Console) overviewAPI(w http.ResponseWriter, r *http.Request) {
	o, err := c.overview(r.Context())
	if err != nil {
		c.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, o)
}

// sessionAPI returns the CSRF token a POST with basic authentication (or
// Config.Authenticate) carries in X-CSRF-Token, with the cookie it belongs
// to.
func (c *Console) sessionAPI(w http.ResponseWriter, r *http.Request) {
	out := map[string]any{"read_only": c.cfg.ReadOnly}
	if !c.cfg.ReadOnly {
		out["csrf_token"] = c.csrfToken(w, r, whoOf(r))
	}
	writeJSON(w, http.StatusOK, out)
}
