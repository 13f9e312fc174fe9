package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// README's first command, as a newcomer runs it: scripts/demo builds
// bin/sockd and runs it on its built-in demo worker; it answers HTTP, and
// Ctrl-C (SIGINT) drains and stops it with exit 0. (Its own arguments go
// to sockd run: here a free port and a private control socket.)
func TestDemoScript(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("scripts/demo", "--listen", "http=tcp://127.0.0.1:0", "--control", filepath.Join(t.TempDir(), "ctl.sock"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOFLAGS=") // as a shell would: no -race from go test
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 100)
	var log strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
	}()
	addrRE := regexp.MustCompile(`listening: address=(127\.0\.0\.1:\d+)`)
	var addr string
	deadline := time.After(3 * time.Minute) // a first build of sockd
	for addr == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("scripts/demo ended:\n%s", log.String())
			}
			log.WriteString(l + "\n")
			if m := addrRE.FindStringSubmatch(l); m != nil {
				addr = m[1]
			}
		case <-deadline:
			t.Fatalf("scripts/demo listens nowhere after 3 minutes:\n%s", log.String())
		}
	}
	drained := make(chan struct{})
	go func() {
		for range lines {
		}
		close(drained)
	}()
	c := &http.Client{Timeout: 10 * time.Second}
	var resp *http.Response
	waitFor(t, 20*time.Second, "an answer from the demo", func() bool {
		resp, err = c.Get("http://" + addr + "/")
		return err == nil
	})
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "hello from pid=") || resp.Header.Get("X-Sockd-Generation") != "1" {
		t.Fatalf("the demo answered %s %q, generation %q", resp.Status, body, resp.Header.Get("X-Sockd-Generation"))
	}
	cmd.Process.Signal(syscall.SIGINT)
	select { // every writer of its stderr gone: sockd and its workers
	case <-drained:
	case <-time.After(30 * time.Second):
		t.Fatal("scripts/demo still writes 30 s after Ctrl-C")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("scripts/demo after Ctrl-C: %v", err)
	}
}
