package console

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/exactlyhq/exactly/internal/deadletter"
)

// A replay or discard is confirmed on a page of its own, which names what
// it selects: dead letters by id, or those a filter selects up to the
// newest id when the page was shown ("through"), so that dead letters
// written since do not join what a person confirmed. The page's form POSTs
// the selection with its CSRF token; the result page reports what was done.
// internal/deadletter resolves each dead letter in a transaction of its own,
// oldest first, under the outbox's replay lock, as the CLI does.

// resolutionOf reads the {action} of the path, or a form's action.
func resolutionOf(action string) (deadletter.Resolution, bool) {
	switch action {
	case "replay":
		return deadletter.Replayed, true
	case "discard":
		return deadletter.Discarded, true
	}
	return "", false
}

// selection is what an action works on.
type selection struct {
	Kind    deadletter.Kind
	Action  string // replay, discard
	IDs     []int64
	Form    form  // when no IDs: the filter
	Through int64 // when no IDs: the newest id it may take
}

// readSelection reads the ids ("id", repeated) or the filter and through.
func readSelection(r *http.Request, k deadletter.Kind, action string) (selection, error) {
	s := selection{Kind: k, Action: action}
	if _, ok := resolutionOf(action); !ok {
		return s, fmt.Errorf("no such action %q: replay or discard", action)
	}
	if err := r.ParseForm(); err != nil {
		return s, err
	}
	for _, v := range r.Form["id"] {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil || id < 1 {
			return s, fmt.Errorf("id %q is not a dead letter's id", v)
		}
		if !slices.Contains(s.IDs, id) {
			s.IDs = append(s.IDs, id)
		}
	}
	slices.Sort(s.IDs) // oldest first: per-key order
	if len(s.IDs) > MaxSelection {
		return s, fmt.Errorf("%d dead letters named; at most %d at a time", len(s.IDs), MaxSelection)
	}
	var err error
	if s.Form, err = readForm(r, k); err != nil {
		return s, err
	}
	if s.Form.State != "" && s.Form.State != "unresolved" {
		return s, errors.New("only unresolved dead letters can be replayed or discarded")
	}
	if t := r.FormValue("through"); t != "" {
		if s.Through, err = strconv.ParseInt(t, 10, 64); err != nil || s.Through < 1 {
			return s, fmt.Errorf("through %q is not an id", t)
		}
	}
	return s, nil
}

// selected returns the ids of the unresolved dead letters s selects, oldest
// first, at most limit.
func (c *Console) selected(r *http.Request, s selection, limit int) ([]int64, error) {
	f, err := s.Form.filter(time.Now())
	if err != nil {
		return nil, err
	}
	f.IDs, f.MaxID, f.Limit = s.IDs, s.Through, limit
	return c.dl.Select(r.Context(), s.Kind, f)
}

type confirmView struct {
	selection
	Count  int   // unresolved dead letters it selects (up to MaxSelection)
	More   bool  // it selects more than MaxSelection: the oldest are taken
	Rows   []row // the first of them
	Gone   []int64
	Max    int
	Target string // where the messages go
}

// confirmPage shows what an action would do and asks to confirm it.
func (c *Console) confirmPage(w http.ResponseWriter, r *http.Request) {
	k, ok := kindOf(r)
	if !ok {
		c.fail(w, r, http.StatusNotFound, "no such kind of dead letters")
		return
	}
	if c.cfg.ReadOnly {
		c.fail(w, r, http.StatusForbidden, "the console is read-only")
		return
	}
	s, err := readSelection(r, k, r.FormValue("action"))
	if err != nil {
		c.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	v := confirmView{selection: s, Max: MaxSelection, Target: c.cfg.Schema + "." + c.cfg.OutboxTable}
	now := time.Now()
	f, err := s.Form.filter(now)
	if err != nil {
		c.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	if !f.Since.IsZero() {
		v.Form.Since = f.Since.UTC().Format(time.RFC3339Nano)
	}
	if !f.Until.IsZero() {
		v.Form.Until = f.Until.UTC().Format(time.RFC3339Nano)
	}
	if len(s.IDs) == 0 && s.Through == 0 && (s.Form.Filtered() || r.FormValue("all") != "") {
		// The newest it selects now: the snapshot confirmed.
		newest, _, err := c.list(r, k, form{Scope: s.Form.Scope, Topic: s.Form.Topic, Reason: s.Form.Reason, Since: v.Form.Since, Until: v.Form.Until, Limit: 1})
		if err != nil {
			c.failErr(w, r, err)
			return
		}
		if len(newest) > 0 {
			v.Through = newest[0].ID
		}
	}
	ids := []int64{}
	if len(s.IDs) > 0 || v.Through > 0 {
		if ids, err = c.selected(r, v.selection, MaxSelection+1); err != nil {
			c.failErr(w, r, err)
			return
		}
	}
	if len(ids) > MaxSelection {
		ids, v.More = ids[:MaxSelection], true
	}
	v.Count = len(ids)
	for _, id := range s.IDs {
		if !slices.Contains(ids, id) {
			v.Gone = append(v.Gone, id)
		}
	}
	if len(ids) > 0 {
		v.Rows, err = c.rowsOf(r, k, ids[:min(len(ids), 20)])
		if err != nil {
			c.failErr(w, r, err)
			return
		}
	}
	c.render(w, r, http.StatusOK, "confirm", page{Title: "Confirm", Nav: string(k), Data: v})
}

// rowsOf reads the dead letters ids as rows, in the order of ids.
func (c *Console) rowsOf(r *http.Request, k deadletter.Kind, ids []int64) ([]row, error) {
	f := deadletter.Filter{IDs: ids, State: deadletter.All, Limit: len(ids)}
	var rows []row
	if k == deadletter.OutboxKind {
		dls, err := c.dl.OutboxList(r.Context(), f)
		for _, d := range dls {
			rows = append(rows, outboxRow(d))
		}
		return rows, err
	}
	dls, err := c.dl.ConsumerList(r.Context(), f)
	for _, d := range dls {
		rows = append(rows, consumerRow(d))
	}
	return rows, err
}

// result is what an action did, and what POST api/dead-letters/... returns.
type result struct {
	Kind       deadletter.Kind `json:"kind"`
	Resolution string          `json:"resolution"`
	Selected   int             `json:"selected"` // unresolved when the action began
	Done       []int64         `json:"done"`     // resolved by this action, oldest first
	Error      string          `json:"error,omitempty"`
	More       bool            `json:"more"` // the filter selects more than one action takes
}

// act resolves what the request selects.
func (c *Console) act(r *http.Request) (result, int) {
	k, ok := kindOf(r)
	if !ok {
		return result{Error: "no such kind of dead letters"}, http.StatusNotFound
	}
	s, err := readSelection(r, k, r.PathValue("action"))
	res, _ := resolutionOf(s.Action)
	out := result{Kind: k, Resolution: string(res), Done: []int64{}}
	if err != nil {
		out.Error = err.Error()
		return out, http.StatusBadRequest
	}
	if len(s.IDs) == 0 && !s.Form.Filtered() && s.Through == 0 {
		out.Error = "name dead letters by id, or by a filter (scope, topic, reason, since, until) or through"
		return out, http.StatusBadRequest
	}
	ids, err := c.selected(r, s, MaxSelection+1)
	if err != nil {
		out.Error = err.Error()
		return out, http.StatusInternalServerError
	}
	if len(ids) > MaxSelection {
		ids, out.More = ids[:MaxSelection], true
	}
	out.Selected = len(ids)
	u := whoOf(r)
	out.Done, err = c.dl.ResolveAll(r.Context(), k, ids, res)
	c.cfg.Logger.Info("console: dead letters "+string(res), "kind", k, "ids", out.Done, "by", u.principal, "error", err)
	if err != nil {
		out.Error = err.Error()
		return out, http.StatusConflict
	}
	return out, http.StatusOK
}

func (c *Console) actionPage(w http.ResponseWriter, r *http.Request) {
	out, status := c.act(r)
	k, _ := kindOf(r)
	c.render(w, r, status, "result", page{Title: "Result", Nav: string(k), Data: out})
}

func (c *Console) actionAPI(w http.ResponseWriter, r *http.Request) {
	out, status := c.act(r)
	writeJSON(w, status, out)
}
