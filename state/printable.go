package state

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Printable is s with every byte that is not part of a printable
// character (control bytes, escape sequences' ESC, invalid UTF-8)
// replaced by '?'. Strings a host's users choose, such as a process
// name (any local user sets its own with prctl), reach the admin's
// terminal and the plan files `migrate init` writes through it: never
// as a terminal escape sequence or a line break.
func Printable(s string) string {
	ok := true
	for _, r := range s {
		ok = ok && r != utf8.RuneError && unicode.IsPrint(r)
	}
	if ok {
		return s
	}
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			r = '?'
		}
		b.WriteRune(r)
		s = s[n:]
	}
	return b.String()
}
