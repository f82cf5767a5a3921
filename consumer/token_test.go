package consumer_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly/consumer"
	"github.com/exactlyhq/exactly/inbox"
)

func msg(key, value string, headers ...string) kafka.Message {
	m := kafka.Message{Topic: "orders", Partition: 2, Offset: 9, Key: []byte(key), Value: []byte(value)}
	for i := 0; i+1 < len(headers); i += 2 {
		m.Headers = append(m.Headers, kafka.Header{Key: headers[i], Value: []byte(headers[i+1])})
	}
	return m
}

func TestTokenSources(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		src  consumer.TokenSource
		m    kafka.Message
		want string
		err  error
	}{
		{"header", consumer.FromHeader(""), msg("k", "v", "idempotency-key", "abc"), "abc", nil},
		{"header named", consumer.FromHeader("X-Id"), msg("k", "v", "X-Id", "1"), "1", nil},
		{"header missing", consumer.FromHeader(""), msg("k", "v"), "", inbox.ErrNoToken},
		{"header empty", consumer.FromHeader(""), msg("k", "v", "Idempotency-Key", ""), "", inbox.ErrNoToken},
		{"header too long", consumer.FromHeader(""), msg("k", "v", "Idempotency-Key", strings.Repeat("a", 2000)), "", inbox.ErrInvalidToken},
		{"header repeated", consumer.FromHeader(""), msg("k", "v", "Idempotency-Key", "a", "Idempotency-Key", "b"), "", inbox.ErrInvalidToken},
		{"header repeated, same value", consumer.FromHeader(""), msg("k", "v", "Idempotency-Key", "a", "Idempotency-Key", "a"), "", inbox.ErrInvalidToken},
		{"header repeated in another case", consumer.FromHeader(""), msg("k", "v", "idempotency-key", "a", "IDEMPOTENCY-KEY", "b"), "", inbox.ErrInvalidToken},
		{"header repeated, one empty", consumer.FromHeader(""), msg("k", "v", "Idempotency-Key", "", "Idempotency-Key", "b"), "", inbox.ErrInvalidToken},
		{"header beside others", consumer.FromHeader(""), msg("k", "v", "trace", "t", "Idempotency-Key", "a", "Idempotency-Key-2", "b"), "a", nil},
		{"header with NUL", consumer.FromHeader(""), msg("k", "v", "Idempotency-Key", "a\x00b"), `"a\x00b"`, nil},
		{"header not UTF-8", consumer.FromHeader(""), msg("k", "v", "Idempotency-Key", "a\xffb"), `"a\xffb"`, nil},
		{"cloudevents", consumer.FromCloudEvents(), msg("k", "v", "ce_id", "42", "ce_source", "/orders"), "\"/orders\\n42\"", nil},
		{"cloudevents no source", consumer.FromCloudEvents(), msg("k", "v", "ce_id", "42"), "42", nil},
		{"cloudevents missing", consumer.FromCloudEvents(), msg("k", "v", "ce_source", "/x"), "", inbox.ErrNoToken},
		{"cloudevents empty source", consumer.FromCloudEvents(), msg("k", "v", "ce_id", "42", "ce_source", ""), "42", nil},
		{"cloudevents newline in source", consumer.FromCloudEvents(), msg("k", "v", "ce_id", "42", "ce_source", "a\nx"), `"\n3\na\nx42"`, nil},
		{"cloudevents newline in id", consumer.FromCloudEvents(), msg("k", "v", "ce_id", "x\n42", "ce_source", "a"), `"\n1\nax\n42"`, nil},
		{"cloudevents newline in id, no source", consumer.FromCloudEvents(), msg("k", "v", "ce_id", "a\n42"), `"\n0\na\n42"`, nil},
		{"cloudevents id repeated", consumer.FromCloudEvents(), msg("k", "v", "ce_id", "1", "ce_id", "2"), "", inbox.ErrInvalidToken},
		{"cloudevents source repeated", consumer.FromCloudEvents(), msg("k", "v", "ce_id", "1", "ce_source", "/a", "ce_source", "/b"), "", inbox.ErrInvalidToken},
		{"key", consumer.FromKey(), msg("order-9", "v"), "order-9", nil},
		{"key missing", consumer.FromKey(), msg("", "v"), "", inbox.ErrNoToken},
		{"offset", consumer.FromOffset(), msg("", ""), "orders/2/9", nil},
		{"content hash", consumer.FromContentHash(), msg("k", "v"), "sha256:", nil},
		{"func", consumer.FromFunc(func(m kafka.Message) (string, error) { return string(m.Value), nil }), msg("k", "from-value"), "from-value", nil},
		{"func error", consumer.FromFunc(func(kafka.Message) (string, error) { return "", errors.New("undecodable") }), msg("k", "v"), "", inbox.ErrNoToken},
		{"first of falls back", consumer.FirstOf(consumer.FromHeader(""), consumer.FromKey()), msg("order-1", "v"), "order-1", nil},
		{"first of stops at invalid", consumer.FirstOf(consumer.FromHeader(""), consumer.FromKey()), msg("order-1", "v", "Idempotency-Key", strings.Repeat("a", 2000)), "", inbox.ErrInvalidToken},
		{"first of none", consumer.FirstOf(consumer.FromHeader(""), consumer.FromKey()), msg("", "v"), "", inbox.ErrNoToken},
	} {
		got, err := tc.src.Token(tc.m)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%s: got %v (%v), want %v", tc.name, got, err, tc.err)
			}
			continue
		}
		if tc.want == "" || tc.want == "sha256:" {
			if err != nil || !strings.HasPrefix(got.String(), tc.want) {
				t.Errorf("%s: got %q, %v; want prefix %q", tc.name, got, err, tc.want)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("%s: got %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	// Repeated headers are refused with a message that says so.
	_, err := consumer.FromHeader("").Token(msg("k", "v", "Idempotency-Key", "a", "idempotency-key", "b"))
	if err == nil || !strings.Contains(err.Error(), "2 Idempotency-Key headers") {
		t.Errorf("repeated header: error %v, want one that says 2 Idempotency-Key headers", err)
	}
	// Content hashes separate key and value: ("ab","c") differs from ("a","bc").
	a, _ := consumer.FromContentHash().Token(msg("ab", "c"))
	b, _ := consumer.FromContentHash().Token(msg("a", "bc"))
	if a == b {
		t.Error("content hash does not separate key from value")
	}
}

// FuzzTokenSources feeds arbitrary headers, keys and values to every
// extractor. None may panic; each returns a valid token or an error that
// wraps ErrNoToken or ErrInvalidToken; equal inputs give equal tokens.
func FuzzTokenSources(f *testing.F) {
	f.Add("Idempotency-Key", []byte("0190c5a2-7b1e-7c3d-9e4f-a1b2c3d4e5f6"), []byte("key"), []byte("value"))
	f.Add("ce_id", []byte("1"), []byte{}, []byte{0xff, 0xfe})
	f.Add("", []byte{}, []byte{0}, []byte{})
	f.Add("ce_id", []byte("x\n42"), []byte{}, []byte{})                   // a newline where the encoding separates
	f.Add("Idempotency-Key", []byte("a\x00b\xff"), []byte("k"), []byte{}) // NUL and invalid UTF-8
	f.Add("ce_source", []byte("/a"), []byte{}, []byte{})                  // two ce_source headers
	f.Add("IDEMPOTENCY-KEY", []byte("a"), []byte{}, []byte{})
	sources := []consumer.TokenSource{
		consumer.FromHeader(""), consumer.FromCloudEvents(), consumer.FromKey(), consumer.FromContentHash(), consumer.FromOffset(),
		consumer.FirstOf(consumer.FromHeader(""), consumer.FromCloudEvents(), consumer.FromKey()),
	}
	f.Fuzz(func(t *testing.T, name string, hv, key, value []byte) {
		m := kafka.Message{Topic: "t", Key: key, Value: value, Headers: []kafka.Header{{Key: name, Value: hv}, {Key: "ce_source", Value: hv}}}
		if len(value) > 0 && value[0]%2 == 1 {
			// Sometimes the token header twice: always refused.
			m.Headers = append(m.Headers, kafka.Header{Key: name, Value: value})
			if _, err := consumer.FromHeader(name).Token(m); name != "" && !errors.Is(err, inbox.ErrInvalidToken) {
				t.Fatalf("header %q twice: %v, want ErrInvalidToken", name, err)
			}
		}
		for i, s := range sources {
			got, err := s.Token(m)
			if err != nil {
				if !errors.Is(err, inbox.ErrNoToken) && !errors.Is(err, inbox.ErrInvalidToken) {
					t.Fatalf("source %d: unexpected error kind %v", i, err)
				}
				if !got.IsZero() {
					t.Fatalf("source %d: error %v with non-zero token", i, err)
				}
				continue
			}
			if got.IsZero() || !storable(got.String()) {
				t.Fatalf("source %d: token %q", i, got)
			}
			again, _ := s.Token(m)
			if again != got {
				t.Fatalf("source %d: not deterministic", i)
			}
			re, err := inbox.ParseToken(got.String())
			if err == nil && got.String() == string(hv) && re != got {
				t.Fatalf("source %d: ParseToken(String()) does not round-trip %q", i, got)
			}
		}
	})
}

// storable reports whether s can go into a Postgres text column: valid UTF-8
// without NUL.
func storable(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

// TestCloudEventsUnambiguous: a (ce_source, ce_id) pair has one token, which
// no other pair shares, even with newlines in either; tokens of events that
// follow the CloudEvents specification (no control characters) are what
// they were before the encoding became unambiguous.
func TestCloudEventsUnambiguous(t *testing.T) {
	t.Parallel()
	ce := func(src, id string) string {
		t.Helper()
		m := msg("k", "v", "ce_id", id)
		if src != "" {
			m.Headers = append(m.Headers, kafka.Header{Key: "ce_source", Value: []byte(src)})
		}
		tk, err := consumer.FromCloudEvents().Token(m)
		if err != nil {
			t.Fatalf("(%q, %q): %v", src, id, err)
		}
		return tk.String()
	}
	// Stable for conforming events: source, a newline, id; or id alone.
	want, err := inbox.ParseToken("/orders\n42")
	if err != nil {
		t.Fatal(err)
	}
	if got := ce("/orders", "42"); got != want.String() {
		t.Errorf("conforming event: token %s, want %s as before", got, want)
	}
	if got := ce("", "0190c5a2-7b1e-7c3d-9e4f-a1b2c3d4e5f6"); got != "0190c5a2-7b1e-7c3d-9e4f-a1b2c3d4e5f6" {
		t.Errorf("id alone: token %s", got)
	}
	for _, pair := range [][2][2]string{
		{{"a\nx", "42"}, {"a", "x\n42"}},
		{{"", "a\n42"}, {"a", "42"}},
		{{"", "\n42"}, {"\n", "42"}},
		{{"a\n", "42"}, {"a", "\n42"}},
		{{"", "\n3\na\nx42"}, {"a\nx", "42"}}, // an id that spells another pair's token
		{{"\n1\nax", "42"}, {"a", "x\n42"}},
	} {
		a, b := ce(pair[0][0], pair[0][1]), ce(pair[1][0], pair[1][1])
		if a == b {
			t.Errorf("%q and %q have one token %s", pair[0], pair[1], a)
		}
	}
}

// FuzzCloudEvents: two (source, id) pairs with one token are one pair (an
// empty source is no source).
func FuzzCloudEvents(f *testing.F) {
	f.Add("a\nx", "42", "a", "x\n42")
	f.Add("", "a\n42", "a", "42")
	f.Add("/orders", "42", "/orders", "42")
	f.Add("", "\n3\na\nx42", "a\nx", "42")
	f.Fuzz(func(t *testing.T, src1, id1, src2, id2 string) {
		token := func(src, id string) (inbox.Token, error) {
			m := kafka.Message{Headers: []kafka.Header{{Key: "ce_id", Value: []byte(id)}, {Key: "ce_source", Value: []byte(src)}}}
			return consumer.FromCloudEvents().Token(m)
		}
		a, errA := token(src1, id1)
		b, errB := token(src2, id2)
		if errA != nil || errB != nil {
			return
		}
		if a == b && (src1 != src2 || id1 != id2) {
			t.Fatalf("(%q, %q) and (%q, %q) have one token %s", src1, id1, src2, id2, a)
		}
	})
}
