package pm2

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// SOCKD_COMMAND holds a command line that sockd itself splits into
// words (SplitCommand), so that an argument with a space survives: the
// shipped units' `ExecStart=… -- $SOCKD_COMMAND` has systemd split it at
// whitespace, with no quoting at all. The syntax is a POSIX shell's
// quoting without any expansion:
//
//   - blanks (space, tab, newline) separate words;
//   - '…' is literal;
//   - "…" is literal but for \" \\ \$ \` (the character) and a
//     backslash before a newline (nothing);
//   - outside quotes a backslash takes the next character literally (a
//     newline: nothing);
//   - $, `, *, ~, #, ; and the like are ordinary characters.
//
// QuoteCommand writes a plain word as it is, so a command without
// anything to quote reads the same split either way.

// SplitCommand splits a command line written as QuoteCommand writes it.
func SplitCommand(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("command: a ' is not closed")
			}
			w.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`\n", s[i+1]) >= 0 {
					i++
					if s[i] == '\n' {
						continue
					}
				}
				w.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New(`command: a " is not closed`)
			}
			inWord = true
		case c == '\\':
			if i+1 >= len(s) {
				return nil, errors.New(`command: a \ ends it`)
			}
			i++
			if s[i] != '\n' {
				w.WriteByte(s[i])
				inWord = true
			}
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// QuoteCommand writes argv so that SplitCommand gives it back.
func QuoteCommand(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = quoteWord(a)
	}
	return strings.Join(q, " ")
}

func quoteWord(s string) string {
	switch {
	case s == "":
		return "''"
	case plainWord(s):
		return s
	case !strings.Contains(s, "'"):
		return "'" + s + "'"
	case !strings.ContainsAny(s, "\"\\$`"):
		return `"` + s + `"`
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// plainWord: nothing in s needs quoting, for SplitCommand or for a shell.
func plainWord(s string) bool {
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("@%+=:,./-_", c) >= 0) {
			return false
		}
	}
	return true
}

// envFileValue writes v for systemd's EnvironmentFile= (systemd.exec(5)):
// as it is when that reads back the same, else in single quotes (which
// keep everything but a single quote), else in double quotes with \ " `
// and $ escaped. Newlines survive in either kind of quotes.
func envFileValue(v string) string {
	switch {
	case plainEnvValue(v):
		return v
	case !strings.Contains(v, "'"):
		return "'" + v + "'"
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range v {
		if strings.ContainsRune("\\\"`$", r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

// plainEnvValue: an unquoted value reads back as it is. systemd strips
// leading and trailing blanks, treats a backslash as an escape, a quote
// as the first character as quoting, and a newline as the end.
func plainEnvValue(v string) bool {
	if v == "" {
		return true
	}
	if strings.ContainsAny(v[:1], `"'`) || strings.ContainsAny(v[:1]+v[len(v)-1:], " \t") {
		return false
	}
	for _, r := range v {
		if r == '\\' || r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// checkEnvFileVar says why k=v cannot go into an environment file, nil if
// it can: systemd takes only names of letters, digits and _, and values of
// valid UTF-8 with no NUL, byte order mark or noncharacter.
func checkEnvFileVar(k, v string) error {
	if !validEnvName(k) {
		return fmt.Errorf("variable %s: systemd's EnvironmentFile= takes only names of letters, digits and _ (not starting with a digit)", quote(k))
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("variable %s: the value is not UTF-8, which systemd requires", k)
	}
	for _, r := range v {
		if r == 0 || r == 0xfeff || (r >= 0xfdd0 && r <= 0xfdef) || r&0xfffe == 0xfffe {
			return fmt.Errorf("variable %s: the value holds %U, which systemd does not accept", k, r)
		}
	}
	return nil
}

// unitValue writes a path or a word for a unit file setting that splits
// its value into words and expands %-specifiers (ReadWritePaths=,
// ListenStream=, User=): % doubled, and in double quotes with C escapes
// when it holds a blank, a quote or a backslash.
func unitValue(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	if !strings.ContainsAny(s, " \t\n\"'\\") {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range []byte(s) {
		switch c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
