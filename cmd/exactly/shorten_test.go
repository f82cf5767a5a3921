package main

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// TestShorten: the error column of the dead-letter lists is cut by runes,
// so a long error in any language stays valid UTF-8.
func TestShorten(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"short", "short"},
		{strings.Repeat("a", 60), strings.Repeat("a", 60)},
		{strings.Repeat("a", 61), strings.Repeat("a", 57) + "..."},
		{strings.Repeat("é", 61), strings.Repeat("é", 57) + "..."},
	} {
		got := shorten(tc.in, 60)
		if got != tc.want || !utf8.ValidString(got) {
			t.Errorf("shorten(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
