package procfs

import (
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// Stat takes the fields after the last ')' whatever the command name
// holds, and refuses what is not a stat line.
func TestParseStat(t *testing.T) {
	for _, c := range []struct {
		line  string
		state byte
		ppid  int
		ok    bool
	}{
		{"42 (sh) S 7 42 42 0 -1", 'S', 7, true},
		{"42 (a) b) (c) Z 1 0 0", 'Z', 1, true},
		{"42 (x) R 4194304\n", 'R', 4194304, true},
		{"42 (x) R 12", 'R', 12, true},
		{"42 (x) R", 0, 0, false},
		{"42 (x) R -1 0", 0, 0, false},
		{"42 (x)", 0, 0, false},
		{"no parenthesis", 0, 0, false},
		{"", 0, 0, false},
	} {
		st, ppid, err := parseStat(42, []byte(c.line))
		if (err == nil) != c.ok || st != c.state || ppid != c.ppid {
			t.Errorf("parseStat(%q) = %c %d %v", c.line, st, ppid, err)
		}
	}
	if a := testing.AllocsPerRun(50, func() { Stat(os.Getpid()) }); a > 3 {
		t.Errorf("Stat allocates %.0f times a call; the notify socket calls it for every message", a)
	}
}

func TestParseNetUnix(t *testing.T) {
	in := "Num       RefCount Protocol Flags    Type St Inode Path\n" +
		"0000000000000000: 00000002 00000000 00010000 0001 01 101 /run/sockd/sockd.sock\n" +
		"0000000000000000: 00000002 00000000 00010000 0001 01 102 /tmp/a dir/my ctl.sock\n" +
		"0000000000000000: 00000002 00000000 00010000 0001 01 103 @abstract\n" +
		"0000000000000000: 00000002 00000000 00010000 0005 01 104 /tmp/seqpacket.sock\n" +
		"0000000000000000: 00000002 00000000 00000000 0001 03 105 /tmp/connected.sock\n" +
		"0000000000000000: 00000002 00000000 00010000 0001 01 106\n" +
		"0000000000000000: 00000002 00000000 00000000 0002 01 107 /run/systemd/notify\n"
	got := parseNetUnix([]byte(in))
	want := []UnixListener{{101, "/run/sockd/sockd.sock"}, {102, "/tmp/a dir/my ctl.sock"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parseNetUnix = %+v, want %+v", got, want)
	}
}

// TestUnixListeners: against the kernel, a listener this process holds.
func TestUnixListeners(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ls, err := UnixListeners(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		if l.Path == path {
			return
		}
	}
	t.Fatalf("%s not among %+v", path, ls)
}
