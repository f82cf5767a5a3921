package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"
)

// csrfCookie holds a random value per browser; the CSRF token of a form is
// an HMAC of it and of who signed in, under a key of the Console. Another
// site can neither read the token from a page nor compute it, and a token
// of one browser or person is worthless in another's.
const csrfCookie = "exactly_console_csrf"

// csrfField is the form field, and csrfHeader the header, a POST carries
// its CSRF token in.
const (
	csrfField  = "csrf"
	csrfHeader = "X-CSRF-Token"
)

// who is how a request authenticated.
type who struct {
	principal string // "user:NAME", "token", "app"
	bearer    bool   // by Config.Token: needs no CSRF token
}

// authenticate returns who made r, or false when nobody it admits did.
func (c *Console) authenticate(r *http.Request) (who, bool) {
	if c.cfg.Token != "" {
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && equal(tok, c.cfg.Token) {
			return who{principal: "token", bearer: true}, true
		}
	}
	if c.cfg.Username != "" {
		if u, p, ok := r.BasicAuth(); ok && equal(u, c.cfg.Username) && equal(p, c.cfg.Password) {
			return who{principal: "user:" + u}, true
		}
	}
	if c.cfg.Authenticate != nil && c.cfg.Authenticate(r) {
		return who{principal: "app"}, true
	}
	return who{}, false
}

// equal compares in time independent of where a and b differ.
func equal(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

// unauthorized answers a request nobody admitted: with a challenge that
// makes a browser ask for a user and password when basic authentication is
// configured.
func (c *Console) unauthorized(w http.ResponseWriter, r *http.Request) {
	if c.cfg.Username != "" {
		w.Header().Set("WWW-Authenticate", `Basic realm="exactly console", charset="UTF-8"`)
	}
	c.fail(w, r, http.StatusUnauthorized, "authentication required")
}

// csrfToken returns the CSRF token of the browser's cookie for u, setting
// the cookie when the browser has none.
func (c *Console) csrfToken(w http.ResponseWriter, r *http.Request, u who) string {
	value := ""
	if ck, err := r.Cookie(csrfCookie); err == nil && len(ck.Value) >= 26 {
		value = ck.Value
	} else {
		value = rand.Text() // 26 random base32 characters: 130 bits
		http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: value, Path: c.cfg.Path, HttpOnly: true,
			Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	}
	return c.sign(value, u)
}

func (c *Console) sign(cookie string, u who) string {
	m := hmac.New(sha256.New, c.csrfKey)
	m.Write([]byte(cookie + "\x00" + u.principal))
	return hex.EncodeToString(m.Sum(nil))
}

// checkCSRF reports whether a POST carries the token of its browser's
// cookie; requests with the bearer token need none.
func (c *Console) checkCSRF(r *http.Request, u who) bool {
	if u.bearer {
		return true
	}
	ck, err := r.Cookie(csrfCookie)
	if err != nil || len(ck.Value) < 26 {
		return false
	}
	got := r.Header.Get(csrfHeader)
	if got == "" {
		got = r.PostFormValue(csrfField)
	}
	return got != "" && hmac.Equal([]byte(got), []byte(c.sign(ck.Value, u)))
}
