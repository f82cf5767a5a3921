package inbox

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// MaxTokenLen is the longest token accepted, in bytes. Postgres b-tree
// entries are limited to about 2.7 kB; a token this long is almost certainly
// a payload passed by mistake.
const MaxTokenLen = 1024

// Token kinds, stored as the first byte of the token column. The kind keeps
// a text token from ever colliding with the binary form of a UUID or digest.
const (
	kindUUID   byte = 0
	kindText   byte = 1
	kindDigest byte = 2
	// kindUUIDNotV7 is how the partitioned layout stores a UUID that is not
	// a UUIDv7, so that kind 0 holds time-ordered tokens only and a random
	// UUID's first 48 bits are never taken for a time. Never a Token's kind.
	kindUUIDNotV7 byte = 3
)

var (
	// ErrNoToken reports a message or request that carries no usable
	// idempotency token. Such a message must not be processed without
	// protection; the consumer dead-letters it.
	ErrNoToken = errors.New("inbox: no idempotency token")
	// ErrInvalidToken reports a token that is present but unusable, such as
	// one longer than MaxTokenLen.
	ErrInvalidToken = errors.New("inbox: invalid idempotency token")
)

// Token is a normalized idempotency token. The zero Token is invalid.
//
// A token that is a UUID in canonical 8-4-4-4-12 form (either case) is stored
// as its 16 bytes, so time-ordered UUIDv7 tokens keep their locality in the
// index and equal UUIDs in different case are one token. Any other text is
// stored as its bytes and compared byte by byte.
type Token struct {
	// b is the stored form: a kind byte, then the body.
	b string
}

// ParseToken returns the token for s. It returns an error wrapping
// ErrNoToken when s is empty and ErrInvalidToken when s is longer than
// MaxTokenLen.
func ParseToken(s string) (Token, error) {
	if s == "" {
		return Token{}, fmt.Errorf("%w: empty", ErrNoToken)
	}
	if len(s) > MaxTokenLen {
		return Token{}, fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidToken, len(s), MaxTokenLen)
	}
	if u, ok := parseUUID(s); ok {
		return Token{b: string(kindUUID) + string(u[:])}, nil
	}
	return Token{b: string(kindText) + s}, nil
}

// UUIDToken returns the token for a 16-byte UUID.
func UUIDToken(u [16]byte) Token { return Token{b: string(kindUUID) + string(u[:])} }

// DigestToken returns a token for a binary digest, such as a content hash.
// Digest tokens never equal text or UUID tokens.
func DigestToken(d []byte) (Token, error) {
	if len(d) == 0 {
		return Token{}, fmt.Errorf("%w: empty digest", ErrNoToken)
	}
	if len(d) > MaxTokenLen {
		return Token{}, fmt.Errorf("%w: digest of %d bytes, more than %d", ErrInvalidToken, len(d), MaxTokenLen)
	}
	return Token{b: string(kindDigest) + string(d)}, nil
}

// tokenFromStored rebuilds a Token from its stored form.
func tokenFromStored(b []byte) (Token, error) {
	if len(b) < 2 || len(b) > MaxTokenLen+1 || b[0] > kindDigest || (b[0] == kindUUID && len(b) != 17) {
		return Token{}, fmt.Errorf("%w: stored form %x", ErrInvalidToken, b)
	}
	return Token{b: string(b)}, nil
}

// IsZero reports whether t is the zero, invalid Token.
func (t Token) IsZero() bool { return t.b == "" }

// String returns the token as a person would write it: a UUID in canonical
// lower case, text as it came (quoted with Go escapes when it is not
// printable UTF-8), a digest as "sha256:" or "digest:" followed by hex. The
// result is always valid UTF-8 without NUL, so it fits a Postgres text
// column (the dead-letter table's token) whatever bytes the token holds.
// It is meant for people: two tokens can print alike (printable text that
// looks like a quoted string, and the token that string quotes), so compare
// Tokens, not their strings.
func (t Token) String() string {
	if t.b == "" {
		return ""
	}
	body := t.b[1:]
	switch t.b[0] {
	case kindUUID:
		return formatUUID([]byte(body))
	case kindDigest:
		if len(body) == sha256.Size {
			return "sha256:" + hex.EncodeToString([]byte(body))
		}
		return "digest:" + hex.EncodeToString([]byte(body))
	default:
		if isPrintable(body) {
			return body
		}
		return strconv.Quote(body)
	}
}

// stored returns the form written to the token column of the single-table
// layout.
func (t Token) stored() []byte { return []byte(t.b) }

// Time returns the time of a UUIDv7 token, its first 48 bits in
// milliseconds since the Unix epoch, and false for any other token. The
// partitioned layout (LayoutPartitioned) files and retires tokens by it.
func (t Token) Time() (time.Time, bool) {
	if !t.isUUIDv7() {
		return time.Time{}, false
	}
	return time.UnixMilli(uuidMillis(t.b[1:])).UTC(), true
}

// isUUIDv7 reports whether t is a UUID of version 7 and the RFC 9562 variant.
func (t Token) isUUIDv7() bool {
	return len(t.b) == 17 && t.b[0] == kindUUID && t.b[7]>>4 == 7 && t.b[9]>>6 == 2
}

// uuidMillis is the 48-bit big-endian millisecond timestamp that begins u.
func uuidMillis(u string) int64 {
	var ms int64
	for i := range 6 {
		ms = ms<<8 | int64(u[i])
	}
	return ms
}

func isPrintable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !strconv.IsPrint(r) {
			return false
		}
	}
	return true
}

func parseUUID(s string) (u [16]byte, ok bool) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	j := 0
	for i := 0; i < 36; {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			i++
			continue
		}
		hi, ok1 := unhex(s[i])
		lo, ok2 := unhex(s[i+1])
		if !ok1 || !ok2 {
			return u, false
		}
		u[j] = hi<<4 | lo
		j++
		i += 2
	}
	return u, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func formatUUID(u []byte) string {
	h := hex.EncodeToString(u)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Fingerprint returns the fingerprint of a payload that the inbox stores
// beside its token: the first 16 bytes of its SHA-256. A token claimed again
// with a different fingerprint is a Conflict, not a Duplicate.
func Fingerprint(payload []byte) []byte {
	sum := sha256.Sum256(payload)
	return sum[:16]
}
