package console

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/internal/deadletter"
	"github.com/exactlyhq/exactly/outbox"
)

// kindOf reads the {kind} of the path: consumer or outbox.
func kindOf(r *http.Request) (deadletter.Kind, bool) {
	switch k := deadletter.Kind(r.PathValue("kind")); k {
	case deadletter.ConsumerKind, deadletter.OutboxKind:
		return k, true
	}
	return "", false
}

func kindName(k deadletter.Kind) string {
	if k == deadletter.OutboxKind {
		return "Outbox dead letters"
	}
	return "Consumer dead letters"
}

// form is a selection of dead letters as the query string or a form names
// it, kept as typed to fill the filter form again.
type form struct {
	Scope, Topic, Reason, Since, Until string
	State                              string // "", "resolved", "all"
	Before                             int64  // list ids below it; 0: from the newest
	Limit                              int
}

// values is f as a query string's values, with before.
func (f form) values(before int64) url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"scope": f.Scope, "topic": f.Topic, "reason": f.Reason, "since": f.Since, "until": f.Until, "state": f.State} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if before > 0 {
		v.Set("before", strconv.FormatInt(before, 10))
	}
	return v
}

// Query is f as a query string ("?scope=..."), from the newest.
func (f form) Query() string {
	if v := f.values(0); len(v) > 0 {
		return "?" + v.Encode()
	}
	return ""
}

// Older is the query string of the page after the one ending at last.
func (f form) Older(last int64) string { return "?" + f.values(last).Encode() }

// Filtered reports whether any filter is set.
func (f form) Filtered() bool {
	return f.Scope != "" || f.Topic != "" || f.Reason != "" || f.Since != "" || f.Until != ""
}

// readForm reads a selection from r's query string or form.
func readForm(r *http.Request, k deadletter.Kind) (form, error) {
	f := form{Scope: r.FormValue("scope"), Topic: r.FormValue("topic"), Reason: r.FormValue("reason"),
		Since: r.FormValue("since"), Until: r.FormValue("until"), State: r.FormValue("state")}
	if k == deadletter.OutboxKind && f.Scope != "" {
		return f, errors.New("outbox dead letters have no scope")
	}
	if !slices.Contains([]string{"", "unresolved", "resolved", "all"}, f.State) {
		return f, fmt.Errorf("state %q is none of unresolved, resolved, all", f.State)
	}
	var err error
	if s := r.FormValue("before"); s != "" {
		if f.Before, err = strconv.ParseInt(s, 10, 64); err != nil || f.Before < 1 {
			return f, fmt.Errorf("before %q is not an id", s)
		}
	}
	if s := r.FormValue("limit"); s != "" {
		if f.Limit, err = strconv.Atoi(s); err != nil || f.Limit < 1 || f.Limit > 500 {
			return f, fmt.Errorf("limit %q is not within 1..500", s)
		}
	}
	_, err = f.filter(time.Now()) // the times
	return f, err
}

// filter is the deadletter.Filter of f, times read at now.
func (f form) filter(now time.Time) (deadletter.Filter, error) {
	since, err := deadletter.ParseTime(f.Since, now)
	if err != nil {
		return deadletter.Filter{}, fmt.Errorf("since: %w", err)
	}
	until, err := deadletter.ParseTime(f.Until, now)
	if err != nil {
		return deadletter.Filter{}, fmt.Errorf("until: %w", err)
	}
	df := deadletter.Filter{Scope: f.Scope, Topic: f.Topic, Reason: f.Reason, Since: since, Until: until, Limit: f.Limit}
	switch f.State {
	case "resolved":
		df.State = deadletter.Resolved
	case "all":
		df.State = deadletter.All
	}
	if f.Before > 0 {
		df.MaxID = f.Before - 1
	}
	return df, nil
}

// row is a dead letter of either kind as a list shows it.
type row struct {
	ID         int64
	Time       time.Time // created (consumer), dead (outbox)
	Scope      string
	Topic      string
	Where      string // topic/partition/offset, or the message id
	Key        string
	Reason     string
	Error      string
	Attempts   int
	Resolution string
	ResolvedAt *time.Time
}

func consumerRow(d deadletter.Consumer) row {
	return row{ID: d.ID, Time: d.CreatedAt, Scope: d.Scope, Topic: d.Topic, Where: fmt.Sprintf("%s/%d/%d", d.Topic, d.Partition, d.Offset),
		Key: brief(d.Key, d.KeySize == nil, 40), Reason: d.Reason, Error: d.Error, Attempts: d.Attempts, Resolution: d.Resolution, ResolvedAt: d.ResolvedAt}
}

func outboxRow(d deadletter.Outbox) row {
	return row{ID: d.ID, Time: d.DeadAt, Topic: d.Topic, Where: d.MessageID,
		Key: brief(d.Key, d.KeySize == nil, 40), Reason: d.Reason, Error: d.Error, Attempts: d.Rejections, Resolution: d.Resolution, ResolvedAt: d.ResolvedAt}
}

// list reads the page f selects: rows, and the raw dead letters for the
// API.
func (c *Console) list(r *http.Request, k deadletter.Kind, f form) ([]row, any, error) {
	df, err := f.filter(time.Now())
	if err != nil {
		return nil, nil, err
	}
	df.NewestFirst = true
	df.Limit = min(f.Limit, 500)
	if df.Limit == 0 {
		df.Limit = c.cfg.PageSize
	}
	var rows []row
	if k == deadletter.OutboxKind {
		dls, err := c.dl.OutboxList(r.Context(), df)
		for _, d := range dls {
			rows = append(rows, outboxRow(d))
		}
		return rows, dls, err
	}
	dls, err := c.dl.ConsumerList(r.Context(), df)
	for _, d := range dls {
		rows = append(rows, consumerRow(d))
	}
	return rows, dls, err
}

type listView struct {
	Kind     deadletter.Kind
	Form     form
	Rows     []row
	Next     int64 // the last id shown when there may be older ones
	Reasons  []string
	Actions  bool // the rows may be resolved here
	PageSize int
}

// listed reads the page of dead letters r asks for; it answers r itself and
// reports false when it cannot.
func (c *Console) listed(w http.ResponseWriter, r *http.Request) (k deadletter.Kind, f form, rows []row, dls any, ok bool) {
	k, ok = kindOf(r)
	if !ok {
		c.fail(w, r, http.StatusNotFound, "no such kind of dead letters")
		return k, f, nil, nil, false
	}
	f, err := readForm(r, k)
	if err != nil {
		c.fail(w, r, http.StatusBadRequest, err.Error())
		return k, f, nil, nil, false
	}
	rows, dls, err = c.list(r, k, f)
	if err != nil {
		c.failErr(w, r, err)
		return k, f, nil, nil, false
	}
	return k, f, rows, dls, true
}

func (c *Console) listPage(w http.ResponseWriter, r *http.Request) {
	k, f, rows, _, ok := c.listed(w, r)
	if !ok {
		return
	}
	v := listView{Kind: k, Form: f, Rows: rows, Actions: !c.cfg.ReadOnly && (f.State == "" || f.State == "unresolved"),
		PageSize: cmp.Or(f.Limit, c.cfg.PageSize)}
	if len(rows) == v.PageSize {
		v.Next = rows[len(rows)-1].ID
	}
	v.Reasons = reasons(k)
	c.render(w, r, http.StatusOK, "list", page{Title: kindName(k), Nav: string(k), Data: v})
}

func (c *Console) listAPI(w http.ResponseWriter, r *http.Request) {
	_, f, rows, dls, ok := c.listed(w, r)
	if !ok {
		return
	}
	out := map[string]any{"dead_letters": dls}
	if len(rows) == cmp.Or(f.Limit, c.cfg.PageSize) {
		out["next_before"] = rows[len(rows)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
}

// header is a message header as a page shows it.
type header struct {
	Key   string
	Value shown
}

type detailView struct {
	Kind     deadletter.Kind
	Consumer *deadletter.Consumer
	Outbox   *deadletter.Outbox
	Key      shown
	Value    shown
	Headers  []header
	Actions  bool
}

func (c *Console) read(r *http.Request) (deadletter.Kind, any, *detailView, error) {
	k, ok := kindOf(r)
	if !ok {
		return k, nil, nil, fmt.Errorf("no such kind of dead letters: %w", deadletter.ErrNotFound)
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		return k, nil, nil, fmt.Errorf("dead letter %q: %w", r.PathValue("id"), deadletter.ErrNotFound)
	}
	limit := c.cfg.MaxShownBytes
	v := &detailView{Kind: k}
	var hs []deadletter.Header
	var raw any
	if k == deadletter.OutboxKind {
		d, err := c.dl.Outbox(r.Context(), id)
		if err != nil {
			return k, nil, nil, err
		}
		v.Outbox, raw, hs = &d, d, d.Headers
		v.Key, v.Value = show(d.Key, len(d.Key), limit, d.KeySize == nil), show(d.Value, d.ValueSize, limit, false)
		v.Actions = d.ResolvedAt == nil && !c.cfg.ReadOnly
	} else {
		d, err := c.dl.Consumer(r.Context(), id)
		if err != nil {
			return k, nil, nil, err
		}
		v.Consumer, raw, hs = &d, d, d.Headers
		v.Key, v.Value = show(d.Key, len(d.Key), limit, d.KeySize == nil), show(d.Value, d.ValueSize, limit, false)
		v.Actions = d.ResolvedAt == nil && !c.cfg.ReadOnly
	}
	for _, h := range hs {
		v.Headers = append(v.Headers, header{Key: h.Key, Value: show(h.Value, len(h.Value), limit, false)})
	}
	return k, raw, v, nil
}

func (c *Console) detailPage(w http.ResponseWriter, r *http.Request) {
	k, _, v, err := c.read(r)
	if err != nil {
		c.failErr(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "detail", page{Title: fmt.Sprintf("%s #%s", kindName(k), r.PathValue("id")), Nav: string(k), Data: v})
}

func (c *Console) detailAPI(w http.ResponseWriter, r *http.Request) {
	_, raw, _, err := c.read(r)
	if err != nil {
		c.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, raw)
}

// reasons are the reasons dead letters of k are written with.
func reasons(k deadletter.Kind) []string {
	if k == deadletter.OutboxKind {
		return []string{outbox.ReasonTooLarge, outbox.ReasonUnknownTopic, outbox.ReasonRejected}
	}
	return []string{consumer.ReasonHandlerError, consumer.ReasonPermanent, consumer.ReasonUndecodable, consumer.ReasonNoToken,
		consumer.ReasonInvalidToken, consumer.ReasonTokenConflict, consumer.ReasonOversized, consumer.ReasonProcessDied}
}
