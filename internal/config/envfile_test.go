package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// systemd.exec(5)'s EnvironmentFile= rules, case by case.
func TestParseEnvFile(t *testing.T) {
	cases := []struct{ in, want string }{
		{"A=1\nB=two words\n", "A=1|B=two words"},
		{"# comment\n; comment\n\nnot an assignment\nA=1", "A=1"},
		{"  A  =   spaced value   \n", "A=spaced value"},
		{"A=a \"b\" 'c'\n", `A=a "b" 'c'`},
		{"A='single  # $x \\n'\n", `A=single  # $x \n`},
		{"A=\"dq \\\" \\\\ \\$ \\` \\x\"\n", "A=dq \" \\ $ ` \\x"},
		{"A='multi\nline'\nB=2\n", "A=multi\nline|B=2"},
		{"A=\"multi\nline\"\n", "A=multi\nline"},
		{"A=con\\\ntinued\n", "A=continued"},
		{"A=\"con\\\ntinued\"\n", "A=continued"},
		{"A=back\\\\slash \\x\n", `A=back\slash x`},
		{"A='x'y\n", "A=xy"},
		{"A=\n", "A="},
		{"A=1\nA=2\n", "A=2"},
		{"A=#not a comment\n", "A=#not a comment"},
		{"A=x\rB=y\n", "A=x|B=y"}, // a lone CR ends a line, as in systemd
		{"A='x\ry'\n", "A=x\ry"},
		{"SOCKD_COMMAND=/srv/app/bin/server --config /etc/app/app.conf\n", "SOCKD_COMMAND=/srv/app/bin/server --config /etc/app/app.conf"},
		{"A=no newline at the end", "A=no newline at the end"},
		{"A=1\r\n", "A=1"},
		{"=x\nB=1\n", "B=1"}, // as systemd: "=x" is a name with no "=" after it
	}
	for _, c := range cases {
		got, err := ParseEnvFile("f", c.in)
		if err != nil || strings.Join(got, "|") != c.want {
			t.Errorf("%q: %q, %v; want %q", c.in, strings.Join(got, "|"), err, c.want)
		}
	}
	for _, c := range []struct{ in, want string }{
		{"A=1\nBAD NAME=2\n", "f:2: \"BAD NAME\" is not a variable name"},
		{"A=1\n\n1A=2\n", "f:3:"},
		{"A-B=1\n", "not a variable name"},
		{"A=\xff\n", "f:1: the value of A is not valid UTF-8"},
		{"A=1\nB=\x00x\n", "f:2: a NUL byte"},
		{"A=1\n# comment \\\nB=1\n", "f:2: a comment ends in \\"},
	} {
		if _, err := ParseEnvFile("f", c.in); err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v, want %q", c.in, err, c.want)
		}
	}
}

func FuzzParseEnvFile(f *testing.F) {
	for _, s := range []string{"A=1\n", "A='x\n", "A=\"\\", "#\\", "A=\\", "  =", "A=b\\\nc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		env, err := ParseEnvFile("f", s)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error of two lines: %q", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, kv := range env {
			k, _, ok := strings.Cut(kv, "=")
			if !ok || !validName(k) || seen[k] {
				t.Fatalf("%q gave %q", s, env)
			}
			seen[k] = true
		}
	})
}

// What is not an environment file is refused with a reason, at once: a
// FIFO (no hang waiting for a writer), a device, a directory, a file over
// MaxEnvFile.
func TestReadEnvFileRefuses(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.env")
	os.WriteFile(big, []byte("A="+strings.Repeat("x", MaxEnvFile)+"\n"), 0o644)
	for path, want := range map[string]string{fifo: "not a regular file", "/dev/zero": "not a regular file", dir: "not a regular file", big: "larger than 4 MiB"} {
		if _, err := ReadEnvFile(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ReadEnvFile(%s): %v, want %q", path, err, want)
		}
	}
}

// Many variables, and the same one set twice: each once, in the order
// first seen, with the last value; a large file is read in one pass.
func TestReadEnvFileManyVariables(t *testing.T) {
	var b strings.Builder
	const n = 150000
	for i := range n {
		fmt.Fprintf(&b, "K%06d=%d\n", i, i)
	}
	b.WriteString("K000007=again\n")
	path := filepath.Join(t.TempDir(), "many.env")
	os.WriteFile(path, []byte(b.String()), 0o644)
	env, err := ReadEnvFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(env) != n || env[7] != "K000007=again" || env[n-1] != fmt.Sprintf("K%06d=%d", n-1, n-1) {
		t.Fatalf("%d variables, [7] %q, last %q", len(env), env[7], env[n-1])
	}
	merged := mergeEnv([]string{"PATH=/bin", "K000001=old"}, env...)
	if len(merged) != n+1 || merged[1] != "K000001=1" || merged[0] != "PATH=/bin" {
		t.Fatalf("merged over an environment: %d, %q %q", len(merged), merged[0], merged[1])
	}
}
