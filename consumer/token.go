package consumer

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/segmentio/kafka-go"

	"github.com/exactlyhq/exactly"
	"github.com/exactlyhq/exactly/inbox"
)

// TokenSource finds the idempotency token of a Kafka message
// ([Config].Token). It returns an error wrapping [inbox.ErrNoToken] when the
// message has none, one wrapping [inbox.ErrInvalidToken] when its token is
// unusable, and never panics. The sources live here, beside the Kafka
// client, so that package inbox knows tokens and not Kafka.
type TokenSource interface {
	Token(m kafka.Message) (inbox.Token, error)
}

// TokenSourceFunc adapts a function to a TokenSource.
type TokenSourceFunc func(m kafka.Message) (inbox.Token, error)

// Token calls f.
func (f TokenSourceFunc) Token(m kafka.Message) (inbox.Token, error) { return f(m) }

// FromHeader reads the token from the header named name, compared
// case-insensitively as HTTP header names are. An empty name means
// [exactly.Header], which the outbox relay sets on every message. A message
// with the header more than once (Kafka allows repeated headers) has no
// single token: FromHeader returns an error wrapping [inbox.ErrInvalidToken]
// rather than guess which one the producer meant.
func FromHeader(name string) TokenSource {
	if name == "" {
		name = exactly.Header
	}
	return TokenSourceFunc(func(m kafka.Message) (inbox.Token, error) {
		v, ok, err := header(m, name)
		if err != nil {
			return inbox.Token{}, err
		}
		if !ok {
			return inbox.Token{}, fmt.Errorf("%w: header %q absent", inbox.ErrNoToken, name)
		}
		t, err := inbox.ParseToken(string(v))
		if err != nil {
			return inbox.Token{}, fmt.Errorf("header %q: %w", name, err)
		}
		return t, nil
	})
}

// FromCloudEvents reads the token of a CloudEvents binary-mode Kafka message:
// the ce_id header, qualified by ce_source when present, since the CloudEvents
// specification makes an id unique only within its source. Either header
// repeated is an error wrapping [inbox.ErrInvalidToken].
//
// The token of an event that follows the specification (no control
// characters in ce_source or ce_id) is the source, a newline and the id, or
// the id alone without a source. A newline in either would make that
// ambiguous ("a\nx" + "42" against "a" + "x\n42"), so such an event gets
// "\n", the source's length in decimal, "\n", the source and the id: a form
// with at least two newlines, which no conforming event's token has, and
// from which source and id can be read back.
func FromCloudEvents() TokenSource {
	return TokenSourceFunc(func(m kafka.Message) (inbox.Token, error) {
		id, ok, err := header(m, "ce_id")
		if err != nil {
			return inbox.Token{}, err
		}
		if !ok || len(id) == 0 {
			return inbox.Token{}, fmt.Errorf("%w: header \"ce_id\" absent", inbox.ErrNoToken)
		}
		src, _, err := header(m, "ce_source")
		if err != nil {
			return inbox.Token{}, err
		}
		t, err := inbox.ParseToken(cloudEventsToken(string(src), string(id)))
		if err != nil {
			return inbox.Token{}, fmt.Errorf("ce_id: %w", err)
		}
		return t, nil
	})
}

// cloudEventsToken encodes a source (empty when absent) and an id into one
// string, unambiguously; see FromCloudEvents.
func cloudEventsToken(src, id string) string {
	if !strings.Contains(src, "\n") && !strings.Contains(id, "\n") {
		if src == "" {
			return id
		}
		return src + "\n" + id
	}
	return "\n" + strconv.Itoa(len(src)) + "\n" + src + id
}

// FromKey uses the message key as the token: right when each key names one
// logical event (an order id for "order placed"), wrong when a key carries
// many events (an account id).
func FromKey() TokenSource {
	return TokenSourceFunc(func(m kafka.Message) (inbox.Token, error) {
		if len(m.Key) == 0 {
			return inbox.Token{}, fmt.Errorf("%w: message has no key", inbox.ErrNoToken)
		}
		t, err := inbox.ParseToken(string(m.Key))
		if err != nil {
			return inbox.Token{}, fmt.Errorf("key: %w", err)
		}
		return t, nil
	})
}

// FromContentHash uses the SHA-256 of the key and value as the token: two
// messages with the same key and bytes are one message. Use it only when
// identical content can never be a legitimately repeated event.
func FromContentHash() TokenSource {
	return TokenSourceFunc(func(m kafka.Message) (inbox.Token, error) {
		h := sha256.New()
		var n [8]byte
		putLen(n[:], len(m.Key))
		h.Write(n[:])
		h.Write(m.Key)
		h.Write(m.Value)
		return inbox.DigestToken(h.Sum(nil))
	})
}

func putLen(b []byte, n int) {
	for i := range b {
		b[i] = byte(n >> (8 * (7 - i)))
	}
}

// FromOffset uses the message's topic, partition and offset as the token.
// It protects only against redelivery of the same log entry (a crash before
// the offset commit, a rebalance); a producer that sends a message twice
// writes two offsets, and both are processed. Prefer a token the producer
// chooses.
func FromOffset() TokenSource {
	return TokenSourceFunc(func(m kafka.Message) (inbox.Token, error) {
		if m.Topic == "" {
			return inbox.Token{}, fmt.Errorf("%w: message has no topic", inbox.ErrNoToken)
		}
		return inbox.ParseToken(m.Topic + "/" + strconv.Itoa(m.Partition) + "/" + strconv.FormatInt(m.Offset, 10))
	})
}

// FromFunc derives the token from a string that fn computes, such as a field
// of the decoded payload. An empty string means the message has no token.
func FromFunc(fn func(m kafka.Message) (string, error)) TokenSource {
	return TokenSourceFunc(func(m kafka.Message) (inbox.Token, error) {
		s, err := fn(m)
		if err != nil {
			return inbox.Token{}, fmt.Errorf("%w: %w", inbox.ErrNoToken, err)
		}
		return inbox.ParseToken(s)
	})
}

// FirstOf tries each source in turn and returns the first token found. A
// source that finds a token that is invalid stops the search: falling back
// from a bad token to a weaker one would hide the producer's mistake.
func FirstOf(sources ...TokenSource) TokenSource {
	return TokenSourceFunc(func(m kafka.Message) (inbox.Token, error) {
		var errs []string
		for _, s := range sources {
			t, err := s.Token(m)
			if err == nil {
				return t, nil
			}
			if !errors.Is(err, inbox.ErrNoToken) {
				return inbox.Token{}, err
			}
			errs = append(errs, strings.TrimPrefix(err.Error(), inbox.ErrNoToken.Error()+": "))
		}
		return inbox.Token{}, fmt.Errorf("%w: %s", inbox.ErrNoToken, strings.Join(errs, "; "))
	})
}

// header returns the value of the header named name (compared
// case-insensitively) and whether there is one; a header that occurs more
// than once is an error wrapping inbox.ErrInvalidToken.
func header(m kafka.Message, name string) ([]byte, bool, error) {
	var v []byte
	n := 0
	for _, h := range m.Headers {
		if strings.EqualFold(h.Key, name) {
			v = h.Value
			n++
		}
	}
	if n > 1 {
		return nil, false, fmt.Errorf("%w: %d %s headers", inbox.ErrInvalidToken, n, name)
	}
	return v, n == 1, nil
}
