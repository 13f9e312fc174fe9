package demo

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const helperEnv = "DEMO_TEST_HELPER"

// TestMain runs the test binary as the demo worker when helperEnv is set,
// the way sockd runs it from its hidden subcommand.
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    config
		wantErr string
	}{
		{name: "defaults", want: config{drainTimeout: DefaultDrainTimeout}},
		{name: "flags", args: []string{"--config", "c.conf", "--delay", "5ms", "--drain-timeout", "3s"},
			want: config{file: "c.conf", delay: 5 * time.Millisecond, drainTimeout: 3 * time.Second}},
		{name: "env", env: map[string]string{"HELLO_CONFIG": "e.conf", "HELLO_DELAY": "1s", "HELLO_DRAIN_TIMEOUT": "7s"},
			want: config{file: "e.conf", delay: time.Second, drainTimeout: 7 * time.Second}},
		{name: "flags override env", args: []string{"-delay=2ms"}, env: map[string]string{"HELLO_DELAY": "1s"},
			want: config{delay: 2 * time.Millisecond, drainTimeout: DefaultDrainTimeout}},
		{name: "bad env", env: map[string]string{"HELLO_DELAY": "soon"}, wantErr: "invalid HELLO_DELAY"},
		{name: "bad flag", args: []string{"--delay", "x"}, wantErr: "invalid value"},
		{name: "unknown flag", args: []string{"--port", "80"}, wantErr: "not defined"},
		{name: "extra arg", args: []string{"serve"}, wantErr: "unexpected argument"},
		{name: "zero drain", args: []string{"--drain-timeout", "0s"}, wantErr: "--drain-timeout > 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string { return tc.env[k] }
			var help bytes.Buffer
			got, err := parseArgs(tc.args, getenv, &help)
			if help.Len() > 0 {
				t.Errorf("usage printed for %q: %s", tc.args, help.String())
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseArgs = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// runMain runs Main in-process and checks its exit code and that stderr
// is exactly one line containing want.
func runMain(t *testing.T, args []string, code int, want string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if got := Main(args, &stdout, &stderr); got != code {
		t.Fatalf("Main(%q) = %d, want %d; stderr: %s", args, got, code, stderr.String())
	}
	s := stderr.String()
	if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") || !strings.Contains(s, want) {
		t.Fatalf("stderr = %q, want one line containing %q", s, want)
	}
}

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hello.conf")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBrokenConfig(t *testing.T) {
	// Sockets are passed: the failure must come from the config, before
	// the listeners are even taken.
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_PID", "1")
	p := writeConfig(t, "greeting = hello\nstate = broken\n")
	runMain(t, []string{"--config", p}, ExitFailed, "is broken")
	t.Setenv("HELLO_CONFIG", p)
	runMain(t, nil, ExitFailed, "is broken")
}

func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := Main([]string{"-h"}, &stdout, &stderr); code != ExitOK {
		t.Fatalf("-h: exit %d", code)
	}
	if !strings.Contains(stdout.String(), "-drain-timeout") || stderr.Len() > 0 {
		t.Fatalf("-h: stdout %q, stderr %q", stdout.String(), stderr.String())
	}
}

func TestBadFlagIsOneLine(t *testing.T) {
	runMain(t, []string{"--port", "80"}, ExitUsage, "flag provided but not defined")
}

func TestMissingConfig(t *testing.T) {
	runMain(t, []string{"--config", filepath.Join(t.TempDir(), "none")}, ExitFailed, "read config")
}

func TestNoListenFDs(t *testing.T) {
	t.Setenv("LISTEN_FDS", "")
	os.Unsetenv("LISTEN_FDS")
	p := writeConfig(t, "greeting = hello\n")
	runMain(t, []string{"--config", p}, ExitUsage, "LISTEN_FDS is not set")
}

func TestBadListenEnv(t *testing.T) {
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_PID", "1")
	runMain(t, nil, ExitUsage, "the sockets are not ours")
}
