// Package sqlname checks user-configured SQL identifiers before they are
// quoted with pgx.Identifier.
//
// Quoting makes any name safe to paste into SQL, but Postgres silently
// truncates identifiers longer than 63 bytes, so two long table names could
// end up naming the same table. A name that would be truncated is refused
// instead.
package sqlname

import (
	"fmt"
	"unicode/utf8"
)

// MaxLen is the longest identifier Postgres keeps without truncating it
// (NAMEDATALEN - 1 in a default build).
const MaxLen = 63

// Check returns an error naming field when name is not usable as a single
// Postgres identifier.
func Check(field, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%s: must not be empty", field)
	case len(name) > MaxLen:
		return fmt.Errorf("%s: %q is %d bytes; Postgres identifiers are at most %d bytes", field, name, len(name), MaxLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("%s: %q is not valid UTF-8", field, name)
	}
	for _, r := range name {
		if r == 0 {
			return fmt.Errorf("%s: %q contains a NUL byte", field, name)
		}
	}
	return nil
}
