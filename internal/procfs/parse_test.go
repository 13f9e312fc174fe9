package procfs

import (
	"os"
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
