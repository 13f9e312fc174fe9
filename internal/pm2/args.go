package pm2

import (
	"strings"
	"unicode/utf8"
)

// SplitArgs splits args (or node_args) given as a string the way PM2's
// validator does (lib/tools/Config.js), which is close to a shell but not
// the same:
//
//   - words are separated by whitespace (JavaScript's \s);
//   - "a b" and 'a b' are one word, without their quotes;
//   - KEY="a b" and KEY='a b' are one word too, but keep their quotes
//     (--title="My app" reaches the app as --title="My app");
//   - a backslash is an ordinary character, and a quote that is not
//     closed is an ordinary character;
//   - a word that is empty or only whitespace is dropped ("" is no
//     argument at all).
func SplitArgs(s string) []string {
	var out []string
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if jsSpace(r) {
			i += n
			continue
		}
		w, end := nextWord(s, i)
		i = end
		if len(w) >= 2 && (w[0] == '"' || w[0] == '\'') && w[len(w)-1] == w[0] {
			w = w[1 : len(w)-1]
		} else if w == "\"" || w == "'" {
			w = ""
		}
		if strings.TrimFunc(w, jsSpace) != "" {
			out = append(out, w)
		}
	}
	return out
}

// nextWord returns the word that starts at s[i] (not whitespace) and
// where it ends, trying PM2's forms in its order: KEY="…", KEY='…', "…",
// '…', then a run of non-space.
func nextWord(s string, i int) (string, int) {
	// KEY="…" / KEY='…': a key of no space, quote or '=', then '=' and a
	// closed quote.
	k := i
	for k < len(s) {
		r, n := utf8.DecodeRuneInString(s[k:])
		if jsSpace(r) || r == '"' || r == '\'' || r == '=' {
			break
		}
		k += n
	}
	if k > i && k+1 < len(s) && s[k] == '=' && (s[k+1] == '"' || s[k+1] == '\'') {
		if j := strings.IndexByte(s[k+2:], s[k+1]); j >= 0 {
			end := k + 2 + j + 1
			return s[i:end], end
		}
	}
	// "…" / '…'
	if c := s[i]; c == '"' || c == '\'' {
		if j := strings.IndexByte(s[i+1:], c); j >= 0 {
			end := i + 1 + j + 1
			return s[i:end], end
		}
	}
	// A run of non-space.
	end := i
	for end < len(s) {
		r, n := utf8.DecodeRuneInString(s[end:])
		if jsSpace(r) {
			break
		}
		end += n
	}
	return s[i:end], end
}
