package console

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// shown is bytes of a message as a page shows them: as text, as JSON
// pretty-printed, or as a hex dump when they are not text; never more than
// Config.MaxShownBytes of them. The template escapes Text like any other
// string: a key of "<script>" shows as that text.
type shown struct {
	Kind string // "null", "empty", "text", "json", "binary"
	Text string
	Size int  // bytes in the message
	Cut  bool // Text shows only the first limit bytes
}

// show returns how to show b, of size bytes in all (b may be cut already);
// null is a NULL key.
func show(b []byte, size, limit int, null bool) shown {
	switch {
	case null:
		return shown{Kind: "null"}
	case size == 0:
		return shown{Kind: "empty"}
	}
	s := shown{Size: size, Cut: size > len(b) || len(b) > limit}
	if len(b) > limit {
		b = b[:limit]
	}
	if !s.Cut && json.Valid(b) && (b[0] == '{' || b[0] == '[') {
		var buf bytes.Buffer
		if json.Indent(&buf, b, "", "  ") == nil {
			s.Kind, s.Text = "json", buf.String()
			return s
		}
	}
	if t, ok := text(b, s.Cut); ok {
		s.Kind, s.Text = "text", t
		return s
	}
	s.Kind, s.Text = "binary", hexDump(b)
	return s
}

// text returns b as a string when it is UTF-8 text without control
// characters other than tab and newlines; a cut one may end in the middle
// of a character, which is dropped.
func text(b []byte, cut bool) (string, bool) {
	if cut {
		for i := 0; i < utf8.UTFMax && len(b) > 0 && !utf8.Valid(b); i++ {
			b = b[:len(b)-1]
		}
	}
	if !utf8.Valid(b) {
		return "", false
	}
	for _, r := range string(b) {
		// Format characters (bidirectional overrides) could make text read
		// other than it is: shown as bytes.
		if unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r' || unicode.Is(unicode.Cf, r) && r != '\u200d' {
			return "", false
		}
	}
	return string(b), true
}

// hexDump is b as `hexdump -C` shows it.
func hexDump(b []byte) string {
	var sb strings.Builder
	for off := 0; off < len(b); off += 16 {
		line := b[off:min(off+16, len(b))]
		fmt.Fprintf(&sb, "%08x  ", off)
		for i := range 16 {
			if i < len(line) {
				sb.WriteString(hex.EncodeToString(line[i : i+1]))
				sb.WriteByte(' ')
			} else {
				sb.WriteString("   ")
			}
			if i == 7 {
				sb.WriteByte(' ')
			}
		}
		sb.WriteString(" |")
		for _, c := range line {
			if c >= 0x20 && c < 0x7f {
				sb.WriteByte(c)
			} else {
				sb.WriteByte('.')
			}
		}
		sb.WriteString("|\n")
	}
	return sb.String()
}

// brief is b in one short line for a list: text cut to n characters, or
// the first bytes in hex.
func brief(b []byte, null bool, n int) string {
	switch {
	case null:
		return "(null)"
	case len(b) == 0:
		return "(empty)"
	}
	if t, ok := text(b, true); ok && !strings.ContainsAny(t, "\n\r\t") {
		return shorten(t, n)
	}
	if len(b) > n/2 {
		return "0x" + hex.EncodeToString(b[:n/2]) + "…"
	}
	return "0x" + hex.EncodeToString(b)
}

// shorten cuts s to at most n characters, marking the cut with "…".
func shorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}
