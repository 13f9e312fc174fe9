package journal_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/fdtest"
	"github.com/sockd/sockd/internal/journal"
	"github.com/sockd/sockd/internal/journal/journaltest"
)

// The two forms of a field, byte for byte as the protocol's documentation
// spells them.
func TestEntryEncodesBothForms(t *testing.T) {
	var e journal.Entry
	e.AddString("MESSAGE", "foo")
	e.Add("FOO_BAR", []byte("a\nb"))
	e.Add("BIN", []byte{0, 0xff, '='})
	want := "MESSAGE=foo\n" + "FOO_BAR\n\x03\x00\x00\x00\x00\x00\x00\x00a\nb\n" + "BIN=\x00\xff=\n"
	if got := string(e.Bytes()); got != want {
		t.Fatalf("entry = %q, want %q", got, want)
	}
	parsed, err := journaltest.Parse(e.Bytes())
	if err != nil || len(parsed) != 3 {
		t.Fatalf("parse: %v %v", parsed, err)
	}
	if v, _ := parsed.Get("FOO_BAR"); v != "a\nb" {
		t.Fatalf("FOO_BAR = %q", v)
	}
	e.Reset()
	if len(e.Bytes()) != 0 {
		t.Fatal("Reset left bytes")
	}
}

func TestValidName(t *testing.T) {
	for name, ok := range map[string]bool{"MESSAGE": true, "SOCKD_WORKER_PID": true, "A1": true,
		"": false, "_PID": false, "lower": false, "A-B": false, strings.Repeat("A", 65): false} {
		if journal.ValidName(name) != ok {
			t.Errorf("ValidName(%q) = %v", name, !ok)
		}
	}
}

func TestConnSendsSmallAndLargeEntries(t *testing.T) {
	srv := journaltest.Start(t, 0)
	check := fdtest.Track(t, "journal conn")
	c, err := journal.Dial(srv.Path)
	if err != nil {
		t.Fatal(err)
	}
	// A 256 KiB send buffer holds a datagram of less than 512 KiB.
	if err := c.SetWriteBuffer(256 << 10); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: more than a datagram
	for i, v := range [][]byte{[]byte("hello"), {0, 1, 2, 0xfe, 0xff}, []byte("two\nlines"), big} {
		var e journal.Entry
		e.AddString("PRIORITY", "6")
		e.Add("MESSAGE", v)
		e.AddString("N", fmt.Sprint(i))
		if err := c.Send(&e); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	got := srv.Wait(t, 4, 10*time.Second)
	for i, want := range []string{"hello", "\x00\x01\x02\xfe\xff", "two\nlines", string(big)} {
		if m, _ := got[i].Get("MESSAGE"); m != want {
			t.Errorf("entry %d: MESSAGE of %d bytes, want %d", i, len(m), len(want))
		}
	}
	if srv.Memfds() != 1 {
		t.Errorf("%d entries came as memfd, want 1 (the 1 MiB one)", srv.Memfds())
	}
	if errs := srv.Errors(); len(errs) > 0 {
		t.Errorf("fake journald could not parse: %v", errs)
	}
	c.Close()
	if err := c.SendBytes([]byte("MESSAGE=x\n")); err == nil {
		t.Error("send after Close succeeded")
	}
	check()
}

// journald restarted: the socket at the path is a new one; Send connects
// to it again instead of failing from then on.
func TestConnRedialsAfterJournaldRestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "socket")
	l1, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := journal.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendBytes([]byte("MESSAGE=one\n")); err != nil {
		t.Fatal(err)
	}
	l1.Close()
	os.Remove(path)
	l2, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if err := c.SendBytes([]byte("MESSAGE=two\n")); err != nil {
		t.Fatalf("send after restart: %v", err)
	}
	buf := make([]byte, 100)
	l2.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := l2.Read(buf)
	if err != nil || string(buf[:n]) != "MESSAGE=two\n" {
		t.Fatalf("new socket got %q, %v", buf[:n], err)
	}
}

func TestDialMissingSocket(t *testing.T) {
	_, err := journal.Dial(filepath.Join(t.TempDir(), "none"))
	if err == nil || !strings.Contains(err.Error(), "journal socket") {
		t.Fatalf("err = %v", err)
	}
}

// Entries from concurrent senders each arrive whole, and in order per
// sender, with a receiver slower than the senders (small buffer): Send
// waits for room instead of dropping.
func TestConnConcurrentSendersLoseNothing(t *testing.T) {
	srv := journaltest.Start(t, 4096)
	c, err := journal.Dial(srv.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const senders, each = 4, 2000
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var e journal.Entry
			for i := range each {
				e.Reset()
				e.AddString("S", fmt.Sprint(s))
				e.AddString("I", fmt.Sprint(i))
				e.AddString("MESSAGE", strings.Repeat("x", 200))
				if err := c.Send(&e); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := srv.Wait(t, senders*each, 20*time.Second)
	next := make([]int, senders)
	for _, e := range got {
		var s, i int
		sv, _ := e.Get("S")
		iv, _ := e.Get("I")
		fmt.Sscan(sv, &s)
		fmt.Sscan(iv, &i)
		if i != next[s] {
			t.Fatalf("sender %d: entry %d after %d", s, i, next[s]-1)
		}
		next[s]++
	}
}
