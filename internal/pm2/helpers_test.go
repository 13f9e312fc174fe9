package pm2

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// nodePath is the real node the tests evaluate .js files with.
func nodePath(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed: these tests evaluate real ecosystem files with it (scripts/setup installs it)")
	}
	p, err = filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// testEnv is an environment whose PATH holds node's directory and a
// directory of stand-in interpreters (bash, python3), so that resolved
// commands do not depend on the machine.
func testEnv(t testing.TB) (env []string, bin string) {
	t.Helper()
	bin = t.TempDir()
	// Binaries (PM2 runs those directly), copies of true(1) ...
	prog, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"bash", "python3", "ruby", "ts-node"} {
		writeTestFile(t, filepath.Join(bin, name), string(prog), 0o755)
	}
	// ... and a script without an extension, like npm (PM2 runs those
	// with node).
	writeTestFile(t, filepath.Join(bin, "npm-like"), "#!/usr/bin/env node\n", 0o755)
	return []string{"PATH=" + bin + ":" + filepath.Dir(nodePath(t)), "HOME=/nonexistent", "LANG=C.UTF-8"}, bin
}

func testdata(t testing.TB, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// load loads a file with the test environment.
func load(t testing.TB, o Options) (*File, error) {
	t.Helper()
	if o.Environ == nil {
		o.Environ, _ = testEnv(t)
	}
	return Load(context.Background(), o)
}

// checkErr checks that err is a one-line *Error of the kind, whose
// message holds every part.
func checkErr(t testing.TB, err, kind error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", kind)
	}
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("error %T %q is not a *pm2.Error", err, err)
	}
	if !errors.Is(err, kind) {
		t.Errorf("error %q is of kind %v, want %v", err, pe.Kind, kind)
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\r\n") {
		t.Errorf("error is not one line: %q", msg)
	}
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Errorf("error %q does not contain %q", msg, p)
		}
	}
}

// writeFile writes a file for a test, creating its directory.
func writeTestFile(t testing.TB, path, content string, mode os.FileMode) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return path
}
