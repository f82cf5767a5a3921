package netproxy

import (
	"bytes"
	"encoding/binary"
)

// Postgres wire protocol helpers, for inspectors that pick a Postgres
// client's message (https://www.postgresql.org/docs/current/protocol-message-formats.html).

// Request codes of the untyped messages that another untyped message follows.
const (
	pgSSLRequest    = 80877103
	pgGSSENCRequest = 80877104
)

// PGSplitter frames the messages a Postgres client sends. The first message
// of a connection (StartupMessage, or an SSLRequest or GSSENCRequest and
// then the StartupMessage) has no type byte; every later one is a type byte
// and a length that counts itself. It cannot frame a stream that switched to
// TLS: use sslmode=disable behind the proxy. Embed it in an Inspector.
type PGSplitter struct{ typed bool }

// Split returns the length of the first whole message of data, or 0.
func (s *PGSplitter) Split(data []byte) int {
	if !s.typed {
		if len(data) < 8 {
			return 0
		}
		n := int(binary.BigEndian.Uint32(data))
		if n < 8 {
			return len(data) // not Postgres: pass it on whole
		}
		if len(data) < n {
			return 0
		}
		if code := binary.BigEndian.Uint32(data[4:8]); code != pgSSLRequest && code != pgGSSENCRequest {
			s.typed = true
		}
		return n
	}
	if len(data) < 5 {
		return 0
	}
	n := 1 + int(binary.BigEndian.Uint32(data[1:5]))
	if n < 5 {
		return len(data)
	}
	if len(data) < n {
		return 0
	}
	return n
}

// PGQuery returns the text of a simple Query message ('Q'), which is how pgx
// sends statements without arguments, "commit" among them.
func PGQuery(msg []byte) (string, bool) {
	if len(msg) < 6 || msg[0] != 'Q' {
		return "", false
	}
	return string(bytes.TrimSuffix(msg[5:], []byte{0})), true
}

// PGParse returns the statement name and query text of a Parse message
// ('P'), which prepares a statement of the extended protocol.
func PGParse(msg []byte) (name, query string, ok bool) {
	if len(msg) < 5 || msg[0] != 'P' {
		return "", "", false
	}
	f := cstrings(msg[5:], 2)
	if len(f) < 2 {
		return "", "", false
	}
	return f[0], f[1], true
}

// PGBind returns the portal and statement names of a Bind message ('B').
func PGBind(msg []byte) (portal, statement string, ok bool) {
	if len(msg) < 5 || msg[0] != 'B' {
		return "", "", false
	}
	f := cstrings(msg[5:], 2)
	if len(f) < 2 {
		return "", "", false
	}
	return f[0], f[1], true
}

// PGSync reports whether msg is a Sync message ('S'), which ends an
// extended-protocol exchange and commits its implicit transaction.
func PGSync(msg []byte) bool { return len(msg) == 5 && msg[0] == 'S' }

// PGCommandTags returns the tags of the CommandComplete messages ('C') in
// bytes a Postgres server sent ("COMMIT", "DELETE 3", ...), up to the first
// incomplete message.
func PGCommandTags(reply []byte) []string {
	var tags []string
	for len(reply) >= 5 {
		n := 1 + int(binary.BigEndian.Uint32(reply[1:5]))
		if n < 5 || len(reply) < n {
			break
		}
		if reply[0] == 'C' {
			tags = append(tags, string(bytes.TrimSuffix(reply[5:n], []byte{0})))
		}
		reply = reply[n:]
	}
	return tags
}

// cstrings returns up to n NUL-terminated strings from the start of b.
func cstrings(b []byte, n int) []string {
	var out []string
	for len(out) < n {
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			break
		}
		out = append(out, string(b[:i]))
		b = b[i+1:]
	}
	return out
}
