package inbox_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"

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
		src  inbox.TokenSource
		m    kafka.Message
		want string
		err  error
	}{
		{"header", inbox.FromHeader(""), msg("k", "v", "idempotency-key", "abc"), "abc", nil},
		{"header named", inbox.FromHeader("X-Id"), msg("k", "v", "X-Id", "1"), "1", nil},
		{"header missing", inbox.FromHeader(""), msg("k", "v"), "", inbox.ErrNoToken},
		{"header empty", inbox.FromHeader(""), msg("k", "v", "Idempotency-Key", ""), "", inbox.ErrNoToken},
		{"header too long", inbox.FromHeader(""), msg("k", "v", "Idempotency-Key", strings.Repeat("a", 2000)), "", inbox.ErrInvalidToken},
		{"cloudevents", inbox.FromCloudEvents(), msg("k", "v", "ce_id", "42", "ce_source", "/orders"), "\"/orders\\n42\"", nil},
		{"cloudevents no source", inbox.FromCloudEvents(), msg("k", "v", "ce_id", "42"), "42", nil},
		{"cloudevents missing", inbox.FromCloudEvents(), msg("k", "v", "ce_source", "/x"), "", inbox.ErrNoToken},
		{"key", inbox.FromKey(), msg("order-9", "v"), "order-9", nil},
		{"key missing", inbox.FromKey(), msg("", "v"), "", inbox.ErrNoToken},
		{"offset", inbox.FromOffset(), msg("", ""), "orders/2/9", nil},
		{"content hash", inbox.FromContentHash(), msg("k", "v"), "sha256:", nil},
		{"func", inbox.FromFunc(func(m kafka.Message) (string, error) { return string(m.Value), nil }), msg("k", "from-value"), "from-value", nil},
		{"func error", inbox.FromFunc(func(kafka.Message) (string, error) { return "", errors.New("undecodable") }), msg("k", "v"), "", inbox.ErrNoToken},
		{"first of falls back", inbox.FirstOf(inbox.FromHeader(""), inbox.FromKey()), msg("order-1", "v"), "order-1", nil},
		{"first of stops at invalid", inbox.FirstOf(inbox.FromHeader(""), inbox.FromKey()), msg("order-1", "v", "Idempotency-Key", strings.Repeat("a", 2000)), "", inbox.ErrInvalidToken},
		{"first of none", inbox.FirstOf(inbox.FromHeader(""), inbox.FromKey()), msg("", "v"), "", inbox.ErrNoToken},
	} {
		got, err := tc.src.Token(tc.m)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%s: got %v (%v), want %v", tc.name, got, err, tc.err)
			}
			continue
		}
		if err != nil || !strings.HasPrefix(got.String(), tc.want) {
			t.Errorf("%s: got %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	// Content hashes separate key and value: ("ab","c") differs from ("a","bc").
	a, _ := inbox.FromContentHash().Token(msg("ab", "c"))
	b, _ := inbox.FromContentHash().Token(msg("a", "bc"))
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
	sources := []inbox.TokenSource{
		inbox.FromHeader(""), inbox.FromCloudEvents(), inbox.FromKey(), inbox.FromContentHash(), inbox.FromOffset(),
		inbox.FirstOf(inbox.FromHeader(""), inbox.FromCloudEvents(), inbox.FromKey()),
	}
	f.Fuzz(func(t *testing.T, name string, hv, key, value []byte) {
		m := kafka.Message{Topic: "t", Key: key, Value: value, Headers: []kafka.Header{{Key: name, Value: hv}, {Key: "ce_source", Value: hv}}}
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
			if got.IsZero() || !utf8.ValidString(got.String()) {
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
