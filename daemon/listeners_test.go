package daemon

import (
	"os"
	"testing"
)

// The control socket's default place: systemd's RuntimeDirectory= first,
// then /run/sockd for root, else the user's runtime directory.
func TestControlPathDefaults(t *testing.T) {
	t.Setenv("RUNTIME_DIRECTORY", "/run/app:/run/other")
	if p, err := controlPath(""); err != nil || p != "/run/app/sockd.sock" {
		t.Fatalf("with RUNTIME_DIRECTORY: %q %v", p, err)
	}
	if p, _ := controlPath("/tmp/x.sock"); p != "/tmp/x.sock" {
		t.Fatalf("--control ignored: %q", p)
	}
	os.Unsetenv("RUNTIME_DIRECTORY")
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	p, err := controlPath("")
	want := "/run/user/1000/sockd/sockd.sock"
	if os.Geteuid() == 0 {
		want = "/run/sockd/sockd.sock"
	}
	if err != nil || p != want {
		t.Fatalf("default: %q %v, want %q", p, err, want)
	}
}
