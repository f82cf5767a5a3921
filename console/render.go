package console

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

//go:embed templates/*.html
var templateFS embed.FS

// pages are the templates, each page parsed with the layout.
var pages = func() map[string]*template.Template {
	funcs := template.FuncMap{
		"ago":       ago,
		"when":      when,
		"short":     shorten,
		"query":     query,
		"plural":    plural,
		"itoa":      func(i int64) string { return strconv.FormatInt(i, 10) },
		"kindName":  kindName,
		"multiline": func(s string) bool { return strings.ContainsAny(s, "\n\r") },
	}
	out := map[string]*template.Template{}
	for _, name := range []string{"overview", "list", "detail", "confirm", "result", "error"} {
		out[name] = template.Must(template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html"))
	}
	return out
}()

// page is what every page's template gets.
type page struct {
	Title    string
	Nav      string // the section it belongs to: "overview", "consumer", "outbox"
	Path     string // Config.Path
	Schema   string
	ReadOnly bool
	CSRF     string
	Refresh  int // seconds between reloads; 0 none
	Now      time.Time
	Data     any
}

// render writes the page name with status.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	p.Path, p.Schema, p.ReadOnly, p.Now = c.cfg.Path, c.cfg.Schema, c.cfg.ReadOnly, time.Now()
	if u, ok := r.Context().Value(whoKey{}).(who); ok && !c.cfg.ReadOnly {
		p.CSRF = c.csrfToken(w, r, u)
	}
	var buf bytes.Buffer
	if err := pages[name].ExecuteTemplate(&buf, "layout", p); err != nil {
		c.cfg.Logger.Error("console: render", "page", name, "error", err)
		http.Error(w, "render failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// ago is how long ago t (a time.Time or *time.Time) was, roughly: "3m12s
// ago".
func ago(t any) string {
	var at time.Time
	switch t := t.(type) {
	case time.Time:
		at = t
	case *time.Time:
		if t != nil {
			at = *t
		}
	}
	if at.IsZero() {
		return "–"
	}
	return age(time.Since(at)) + " ago"
}

// age is d to two units: 12s, 3m12s, 5h3m, 4d5h.
func age(d time.Duration) string {
	s := int64(max(d, 0) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%dh", s/86400, s%86400/3600)
}

// when is t in UTC, to the second.
func when(t any) string {
	switch t := t.(type) {
	case time.Time:
		if t.IsZero() {
			return "–"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	case *time.Time:
		if t == nil {
			return "–"
		}
		return when(*t)
	}
	return ""
}

// query encodes key, value pairs as a query string, leaving out empty
// values.
func query(kv ...any) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		s := fmt.Sprint(kv[i+1])
		if s != "" && s != "0" {
			v.Add(fmt.Sprint(kv[i]), s)
		}
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
