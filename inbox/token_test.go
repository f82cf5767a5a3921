package inbox_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/exactlyhq/exactly/inbox"
)

func TestParseToken(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want string
		err      error
	}{
		{in: "0190C5A2-7B1E-7C3D-9E4F-A1B2C3D4E5F6", want: "0190c5a2-7b1e-7c3d-9e4f-a1b2c3d4e5f6"},
		{in: "order-1", want: "order-1"},
		{in: "0190c5a2-7b1e-7c3d-9e4f-a1b2c3d4e5fg", want: "0190c5a2-7b1e-7c3d-9e4f-a1b2c3d4e5fg"}, // not hex: text
		{in: "bad\x00byte", want: `"bad\x00byte"`},
		{in: "", err: inbox.ErrNoToken},
		{in: strings.Repeat("x", inbox.MaxTokenLen+1), err: inbox.ErrInvalidToken},
	} {
		got, err := inbox.ParseToken(tc.in)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("ParseToken(%.20q): got %v, want %v", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("ParseToken(%.20q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	// A text token never equals the UUID it spells differently, nor a digest.
	text, _ := inbox.ParseToken("00000000000000000000000000000000")
	d, _ := inbox.DigestToken([]byte("00000000000000000000000000000000"))
	if text == d {
		t.Error("text and digest tokens of the same bytes are equal")
	}
}

// storable reports whether s can go into a Postgres text column: valid UTF-8
// without NUL.
func storable(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

// TestTokenStringStorable: whatever bytes a token carries (a Kafka header's
// value can be any bytes), it goes into the inbox (bytea) as they are and
// its String() into a text column
// (the dead-letter table's token, logs) as valid UTF-8 without NUL; the
// stored token is found again.
func TestTokenStringStorable(t *testing.T) {
	t.Parallel()
	b := setup(t, inbox.Config{})
	ctx := context.Background()
	text := pgx.Identifier{b.cfg.Schema, "texts"}.Sanitize()
	if _, err := b.pool.Exec(ctx, "CREATE TABLE "+text+" (token text NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	for _, raw := range []string{"plain", "a\x00b", "\x00", "a\xffb", "\xc3\x28", "tab\there", "line\nbreak", "\u2028", `"quoted\x00"`, "é", "\xed\xa0\x80"} {
		tk, err := inbox.ParseToken(raw)
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		s := tk.String()
		if !storable(s) {
			t.Errorf("%q: String() %q is not valid UTF-8 without NUL", raw, s)
		}
		if _, err := b.pool.Exec(ctx, "INSERT INTO "+text+" VALUES ($1)", s); err != nil {
			t.Errorf("%q: String() %q into a text column: %v", raw, s, err)
		}
		inTx(t, b.pool, func(tx pgx.Tx) {
			if c := claim(t, b.store, tx, inbox.Request{Token: tk}); c.Outcome != inbox.Fresh {
				t.Errorf("%q: first claim %v", raw, c.Outcome)
			}
		})
		inTx(t, b.pool, func(tx pgx.Tx) {
			if c := claim(t, b.store, tx, inbox.Request{Token: tk}); c.Outcome != inbox.Duplicate {
				t.Errorf("%q: second claim %v, want duplicate", raw, c.Outcome)
			}
		})
	}
}
