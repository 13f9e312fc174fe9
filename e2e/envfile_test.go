package e2e

import (
	"encoding/base64"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sockd/sockd/internal/config"
)

// One env file serves a unit (EnvironmentFile=) and `sockd run
// --env-file`, so sockd must read it exactly as systemd does.
// A comment ending in a backslash, which systemd 252 continues onto the
// next line and 254 no longer does, sockd refuses (refuse).

// TestEnvFileLikeSystemd reads a corpus of tricky files with systemd 252
// (a oneshot unit per file whose EnvironmentFile= it is, running env -0)
// and with config.ReadEnvFile, and compares. Where sockd is stricter on
// purpose (a name that is not a variable name, invalid UTF-8: an error
// instead of systemd's skipped line), the case says so (refuse); known
// differences that are bugs are marked (bug) and skipped with the
// difference, so that the suite stays green and a fix shows up as an
// error asking to drop the mark.
func TestEnvFileLikeSystemd(t *testing.T) {
	corpus := []struct {
		name, text string
		refuse     bool   // sockd refuses the file on purpose (ReadEnvFile's documentation)
		bug        string // a known difference, described
	}{
		{name: "empty", text: ""}, // the baseline: what systemd sets by itself
		{name: "basic", text: "T_A=1\nT_B=two words\n"},
		{name: "comments", text: "# comment\n; comment\n\nnot an assignment\nT_A=1"},
		{name: "spaced", text: "  T_A  =   spaced value   \n\t T_B\t=\tx\t \t\n"},
		{name: "quotes-inside", text: "T_A=a \"b\" 'c'\n"},
		{name: "single", text: "T_A='single  # $x \\n'\n"},
		{name: "single-backslash", text: "T_A='a\\'b'\n"},
		{name: "double-escapes", text: "T_A=\"dq \\\" \\\\ \\$ \\` \\x\"\n"},
		{name: "multiline-single", text: "T_A='multi\nline'\nT_B=2\n"},
		{name: "multiline-double", text: "T_A=\"multi\nline\"\n"},
		{name: "continued", text: "T_A=con\\\ntinued\nT_B=a\\\n   b\n"},
		{name: "continued-double", text: "T_A=\"con\\\ntinued\"\n"},
		{name: "backslashes", text: "T_A=back\\\\slash \\x\nT_B=\\ x\nT_C=x\\ \nT_D=x \\ \n"},
		{name: "adjacent-quotes", text: "T_A='x'y\nT_B='x' y\nT_C=\"a\"'b'c\nT_D=\"x\" # not a comment\n"},
		{name: "empty-values", text: "T_A=\nT_B=''\nT_C=\"\"\nT_D=   \n"},
		{name: "duplicate", text: "T_A=1\nT_B=x\nT_A=2\n"},
		{name: "hash-in-value", text: "T_A=#not a comment\nT_B=x #y\nT_C=a=b=c\n"},
		{name: "no-final-newline", text: "T_A=no newline at the end"},
		{name: "crlf", text: "T_A=1\r\nT_B=two words \r\n"},
		{name: "unterminated-single", text: "T_A='open\nT_B=2\n"},
		{name: "unterminated-double", text: "T_A=\"open\n"},
		{name: "backslash-at-eof", text: "T_A=x\\"},
		{name: "no-name", text: "=x\nT_B=1\n"},
		{name: "no-equals", text: "JUSTAKEY\nT_B=1\n"},
		{name: "names", text: "t_lower=1\n_T=2\nT_A\t=3\n"},
		{name: "utf8", text: "T_A=héllo wörld ✓\n"},
		{name: "command", text: "T_CMD=/srv/app --title 'two words' \"x y\" a\\ b\n"},
		{name: "comment-continued", text: "# a comment \\\nT_B=1\nT_C=2\n", refuse: true},
		{name: "comment-continued-semicolon", text: "; a comment \\\nT_B=1\n", refuse: true},
		{name: "cr-alone", text: "T_A=x\rT_B=y\n"},
		{name: "cr-in-name", text: "T_A\r=1\nT_B=2\n"},
		{name: "cr-after-equals", text: "T_A=\r1\n"},
		{name: "cr-escaped", text: "T_A=x\\\r\nT_B=2\n"},
		{name: "cr-ends-comment", text: "# c\rT_A=1\n"},
		{name: "nul", text: "T_A=1\x00T_B=2\nT_C=3\n"},
		{name: "bad-name", text: "T_A=1\nBAD NAME=2\nT_C=3\n", refuse: true},
		{name: "digit-name", text: "1T=2\nT_A=1\n", refuse: true},
		{name: "dash-name", text: "T-A=1\nT_B=2\n", refuse: true},
		{name: "export", text: "export T_A=1\nT_B=2\n", refuse: true},
		{name: "bom", text: "\xef\xbb\xbfT_A=1\nT_B=2\n", refuse: true},
		{name: "bad-utf8", text: "T_A=1\nT_B=\xff\n", refuse: true},
	}

	sb := Start(t)
	host := t.TempDir()
	var units []string
	for _, c := range corpus {
		sb.WriteFile(t, "/run/envcorpus/"+c.name, []byte(c.text))
		if err := os.WriteFile(filepath.Join(host, c.name), []byte(c.text), 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, "envprobe@"+c.name+".service")
	}
	sb.WriteFile(t, "/run/systemd/system/envprobe@.service", []byte(`[Service]
Type=oneshot
EnvironmentFile=/run/envcorpus/%i
ExecStart=/usr/bin/env -0
StandardOutput=truncate:/run/envout/%i
`))
	sb.MustRun(t, "mkdir", "-p", "/run/envout")
	sb.MustRun(t, "systemctl", "daemon-reload")
	sb.Run(t, append([]string{"systemctl", "start"}, units...)...) // fails for the files systemd refuses; each is looked at below
	systemd := sb.probeOutputs(t)

	base, ok := systemd["empty"]
	if !ok || base["PATH"] == "" {
		t.Fatalf("the baseline probe (an empty file) printed %v", base)
	}
	for _, c := range corpus[1:] {
		t.Run(c.name, func(t *testing.T) {
			sd, loaded := systemd[c.name]
			if loaded { // what the file added to systemd's own variables
				sd = maps.Clone(sd)
				for k := range base {
					delete(sd, k)
				}
			}
			env, err := config.ReadEnvFile(filepath.Join(host, c.name))
			ours := map[string]string{}
			for _, kv := range env {
				k, v, _ := strings.Cut(kv, "=")
				ours[k] = v
			}
			sdSays := fmt.Sprintf("%q", sorted(sd))
			if !loaded {
				sdSays = "refused the file: " + sb.probeResult(t, c.name)
			}
			same := (err != nil) == !loaded && (err != nil || maps.Equal(sd, ours))
			switch {
			case c.refuse:
				if err == nil || strings.Contains(err.Error(), "\n") {
					t.Errorf("file %q: ReadEnvFile gave %q, %v; want a one-line error (systemd: %s)", c.text, sorted(ours), err, sdSays)
				}
				t.Logf("file %q: systemd %s; sockd: %v", c.text, sdSays, err)
			case c.bug != "" && same:
				t.Errorf("file %q: sockd now reads it as systemd does (%s): drop the bug mark", c.text, sdSays)
			case c.bug != "":
				t.Skipf("BUG: %s. File %q: systemd 252 %s; ReadEnvFile %q, %v", c.bug, c.text, sdSays, sorted(ours), err)
			case !same:
				t.Errorf("file %q: systemd 252 %s; ReadEnvFile %q, %v", c.text, sdSays, sorted(ours), err)
			}
		})
	}
}

// probeOutputs reads what each envprobe@ unit printed (env -0), by case
// name; a case whose unit did not run (systemd refused its file) is
// missing.
func (s *Sandbox) probeOutputs(t *testing.T) map[string]map[string]string {
	t.Helper()
	out := s.MustRun(t, "sh", "-c", `for f in /run/envout/*; do [ -e "$f" ] || continue; echo "${f##*/}"; base64 -w0 "$f"; echo; done`)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	m := map[string]map[string]string{}
	for i := 0; i+1 < len(lines); i += 2 {
		raw, err := base64.StdEncoding.DecodeString(lines[i+1])
		if err != nil {
			t.Fatalf("output of %s: %v", lines[i], err)
		}
		env := map[string]string{}
		for _, kv := range strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env[k] = v
			}
		}
		m[lines[i]] = env
	}
	return m
}

// probeResult says how envprobe@name ended and what systemd logged about
// its environment file.
func (s *Sandbox) probeResult(t *testing.T, name string) string {
	t.Helper()
	unit := "envprobe@" + name + ".service"
	res, _ := s.Run(t, "systemctl", "show", "-p", "Result", "--value", unit)
	log, _ := s.Run(t, "journalctl", "-u", unit, "-o", "cat", "--no-pager")
	return fmt.Sprintf("Result=%s, %q", strings.TrimSpace(res), strings.TrimSpace(log))
}

func sorted(env map[string]string) []string {
	var out []string
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}
