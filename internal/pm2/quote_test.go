package pm2

import (
	"bytes"
	"errors"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSplitCommand(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
		err  string
	}{
		{in: "", want: nil},
		{in: "  node   server.js  ", want: []string{"node", "server.js"}},
		{in: `node 'a b' "c d" e\ f`, want: []string{"node", "a b", "c d", "e f"}},
		{in: `'it'\''s' "say \"hi\"" "\$HOME \a"`, want: []string{"it's", `say "hi"`, `$HOME \a`}},
		{in: `a'b'"c"d`, want: []string{"abcd"}},
		{in: `'' ""`, want: []string{"", ""}},
		{in: "a\\\nb \"c\\\nd\"", want: []string{"ab", "cd"}},
		{in: "'multi\nline'", want: []string{"multi\nline"}},
		{in: `$HOME ~ * # ; |`, want: []string{"$HOME", "~", "*", "#", ";", "|"}},
		{in: `a 'b`, err: "' is not closed"},
		{in: `a "b`, err: `" is not closed`},
		{in: `a\`, err: `\ ends it`},
	} {
		got, err := SplitCommand(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("SplitCommand(%q): error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("SplitCommand(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

var argvCases = [][]string{
	{"/usr/bin/node", "/srv/app/server.js"},
	{"/usr/bin/node", "--max-old-space-size=512", "/srv/my app/server.js", "--title=My API"},
	{"node", "it's", `say "hi"`, `back\slash`, "$HOME", "`date`", "a'b\"c$d"},
	{"x", "", " ", "\t", "new\nline", "ünïcödé", "#", ";", "&&", "*"},
}

func TestQuoteCommand(t *testing.T) {
	for _, argv := range argvCases {
		q := QuoteCommand(argv)
		got, err := SplitCommand(q)
		if err != nil || !reflect.DeepEqual(got, argv) {
			t.Errorf("SplitCommand(QuoteCommand(%q)) = %q (%q), %v", argv, got, q, err)
		}
		if sh := shellSplit(t, q); !reflect.DeepEqual(sh, argv) {
			t.Errorf("sh reads QuoteCommand(%q) = %q as %q", argv, q, sh)
		}
	}
	// Nothing to quote: the words as they are, which systemd's
	// whitespace split of $SOCKD_COMMAND in today's units reads alike.
	plain := []string{"/usr/bin/node", "--max-old-space-size=4096", "/srv/app/server.js", "--port=3000", "a,b:c@d%e+f"}
	if q := QuoteCommand(plain); q != strings.Join(plain, " ") {
		t.Errorf("QuoteCommand(%q) = %q, want the words as they are", plain, q)
	}
}

// shellSplit has /bin/sh read a quoted command line, as the reference
// for the POSIX quoting SplitCommand implements.
func shellSplit(t testing.TB, line string) []string {
	t.Helper()
	out, err := exec.Command("/bin/sh", "-c", "eval set -- \"$1\"; for a; do printf '%s\\0' \"$a\"; done", "sh", line).Output()
	if err != nil {
		t.Fatalf("sh: %v", err)
	}
	if len(out) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
}

func FuzzQuoteCommand(f *testing.F) {
	for _, argv := range argvCases {
		f.Add(strings.Join(argv, "\x00"))
	}
	f.Fuzz(func(t *testing.T, s string) {
		argv := strings.Split(s, "\x00")
		q := QuoteCommand(argv)
		got, err := SplitCommand(q)
		if err != nil || !reflect.DeepEqual(got, argv) {
			t.Fatalf("SplitCommand(QuoteCommand(%q)) = %q (%q), %v", argv, got, q, err)
		}
	})
}

func FuzzSplitCommand(f *testing.F) {
	for _, s := range []string{`a 'b c' "d\"e" f\ g`, `'`, `"\`, "a\\\nb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		words, err := SplitCommand(s)
		if err != nil {
			return
		}
		// What it reads, written again, reads the same.
		again, err := SplitCommand(QuoteCommand(words))
		if err != nil || !reflect.DeepEqual(again, words) && !(len(again) == 0 && len(words) == 0) {
			t.Fatalf("%q: %q, then %q (%v)", s, words, again, err)
		}
	})
}

// parseEnvFile reads an environment file by the rules of systemd.exec(5),
// EnvironmentFile=, as the reference for envFileValue. (TestSystemdReadsEnvFile
// checks the real systemd against the same values.)
func parseEnvFile(data string) (map[string]string, error) {
	out := map[string]string{}
	i := 0
	next := func() (byte, bool) {
		if i >= len(data) {
			return 0, false
		}
		i++
		return data[i-1], true
	}
	for i < len(data) {
		// Blank lines, leading blanks, comments.
		c, _ := next()
		if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
			continue
		}
		if c == '#' || c == ';' {
			for c != '\n' {
				if c, _ = next(); i >= len(data) {
					break
				}
			}
			continue
		}
		// KEY=
		start := i - 1
		for c != '=' && c != '\n' && i < len(data) {
			c, _ = next()
		}
		if c != '=' {
			continue // a line without =: ignored
		}
		key := strings.TrimRight(data[start:i-1], " \t")
		var val strings.Builder
		trail := 0        // unquoted blanks at the end, dropped
		unquoted := false // in unquoted text, where quotes are literal
	value:
		for {
			c, ok := next()
			if !ok || c == '\n' {
				break
			}
			switch {
			case !unquoted && (c == ' ' || c == '\t' || c == '\r'):
				// blanks before a value, or between quoted parts
			case !unquoted && c == '\'':
				j := strings.IndexByte(data[i:], '\'')
				if j < 0 {
					return nil, errors.New("unclosed '")
				}
				val.WriteString(data[i : i+j])
				i += j + 1
			case !unquoted && c == '"':
				for {
					c, ok := next()
					if !ok {
						return nil, errors.New(`unclosed "`)
					}
					if c == '"' {
						break
					}
					if c == '\\' {
						d, ok := next()
						if !ok {
							return nil, errors.New(`unclosed "`)
						}
						switch {
						case d == '\n':
						case strings.IndexByte("\"\\`$", d) >= 0:
							val.WriteByte(d)
						default:
							val.WriteByte(c)
							val.WriteByte(d)
						}
						continue
					}
					val.WriteByte(c)
				}
			case c == '\\':
				unquoted = true
				d, ok := next()
				if !ok {
					break value
				}
				if d != '\n' {
					val.WriteByte(d)
				}
				trail = 0
			default:
				unquoted = true
				val.WriteByte(c)
				if c == ' ' || c == '\t' || c == '\r' {
					trail++
				} else {
					trail = 0
				}
			}
		}
		v := val.String()
		out[key] = v[:len(v)-trail]
	}
	return out, nil
}

var envValues = []string{
	"", "plain", "with interior  spaces", " leading", "trailing ", "\ttab", "it's", `say "hi"`, `"quoted"`, `'single'`,
	`back\slash`, "$HOME ${HOME} `date`", "#not a comment", ";semi", "a=b=c", "multi\nline", "\nleading newline", "ünïcödé ✓",
	`it's "both" \ $x`, "cr\rhere", "x\\", "-", "%i %n", "ends with '",
}

func TestEnvFileValue(t *testing.T) {
	var file bytes.Buffer
	for i, v := range envValues {
		file.WriteString(envKey(i) + "=" + envFileValue(v) + "\n")
	}
	got, err := parseEnvFile(file.String())
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range envValues {
		if got[envKey(i)] != v {
			t.Errorf("%q written as %q reads back as %q", v, envFileValue(v), got[envKey(i)])
		}
	}
	for v, want := range map[string]string{"plain": "plain", "it's": "it's", "a b": "a b", " a": "' a'", `a\b`: `'a\b'`, `it's \`: `"it's \\"`} {
		if got := envFileValue(v); got != want {
			t.Errorf("envFileValue(%q) = %s, want %s", v, got, want)
		}
	}
}

func envKey(i int) string { return "V" + strings.Repeat("I", i) }

func FuzzEnvFileValue(f *testing.F) {
	for _, v := range envValues {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			return // refused by checkEnvFileVar before it is written
		}
		file := "# comment\nA=1\nV=" + envFileValue(v) + "\nB=2\n"
		got, err := parseEnvFile(file)
		if err != nil || got["V"] != v || got["A"] != "1" || got["B"] != "2" {
			t.Fatalf("%q written as %q reads back as %q (%v)", v, envFileValue(v), got, err)
		}
	})
}

func TestCheckEnvFileVar(t *testing.T) {
	for _, c := range []struct {
		k, v string
		ok   bool
	}{
		{"NODE_ENV", "production", true}, {"_X1", "", true}, {"1X", "a", false}, {"A-B", "a", false}, {"A.B", "a", false},
		{"A", "a\x00b", false}, {"A", "\xff", false}, {"A", "\ufeff", false}, {"A", "\ufffe", false}, {"A", "\U0001fffe", false}, {"A", "\ufdd0", false},
	} {
		if err := checkEnvFileVar(c.k, c.v); (err == nil) != c.ok {
			t.Errorf("checkEnvFileVar(%q, %q) = %v, want ok=%v", c.k, c.v, err, c.ok)
		}
	}
}

func TestUnitValue(t *testing.T) {
	for in, want := range map[string]string{"/srv/app": "/srv/app", "/srv/my app": `"/srv/my app"`, "/srv/100%": "/srv/100%%", `/a"b\c`: `"/a\"b\\c"`} {
		if got := unitValue(in); got != want {
			t.Errorf("unitValue(%q) = %s, want %s", in, got, want)
		}
	}
}
