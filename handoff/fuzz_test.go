package handoff

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockd/sockd/internal/fdtest"
)

// FuzzRecv sends one packet, with descriptors picked by fdspec (see
// fdtest.Palette), over a real SOCK_SEQPACKET socketpair and reads it
// with conn.recv. recv succeeds exactly when the packet is not empty, fits
// maxPacket bytes and maxFDsPerPacket descriptors and is a JSON message;
// then it returns the message and the very descriptors sent, in order,
// close-on-exec. Whatever happens, no descriptor is left open.
func FuzzRecv(f *testing.F) {
	for _, s := range []struct{ payload, fdspec string }{
		{`{"event":"ready","pid":4242}`, ""},
		{`{"event":"commit"}`, ""},
		{`{"fds":3}`, "012"},
		{`{"fds":2}`, "34567"},
		{`{"fds":201}`, strings.Repeat("0", 201)},
		{`{"fds":"x"}`, "1"},
		{"", ""},
		{"null", ""},
		{`{"event":"commit"}{}`, "7"},
	} {
		f.Add([]byte(s.payload), s.fdspec)
	}
	p := fdtest.NewPalette(f)
	f.Fuzz(func(t *testing.T, payload []byte, fdspec string) {
		checkFDs := fdtest.Track(t, "recv")
		pair := socketpair(t)
		c := wrap(t, pair[0])
		defer c.c.Close()
		fds, inodes := p.Pick(fdspec[:min(len(fdspec), 253)])
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		err := sendPacket(pair[1], payload, oob)
		unix.Close(pair[1])
		if err != nil {
			return // too big for the socket
		}
		var m message
		got, err := c.recv(&m, time.Now().Add(10*time.Second))
		var want message
		ok := len(payload) > 0 && len(payload) <= maxPacket && len(fds) <= maxFDsPerPacket && json.Unmarshal(payload, &want) == nil
		if (err == nil) != ok {
			t.Fatalf("recv of %d bytes with %d descriptors: %v; want success: %v", len(payload), len(fds), err, ok)
		}
		if err == nil {
			var gotInodes []uint64
			for _, fd := range got {
				if !fdtest.Cloexec(fd) {
					t.Errorf("received fd %d not close-on-exec", fd)
				}
				gotInodes = append(gotInodes, fdtest.Inode(fd))
			}
			if m != want || !slices.Equal(gotInodes, inodes) {
				t.Errorf("recv = %+v with %v; sent %+v with %v", m, gotInodes, want, inodes)
			}
		}
		closeAll(got)
		c.c.Close()
		checkFDs()
	})
}

// FuzzChildReceive plays a broken or hostile old sockd: it sends the
// packets state and every line of more, with descriptors picked by fdspec
// (see exchange), and closes its end. receive then fails, without
// leaving a descriptor open, or succeeds with a state that holds together
// (checkAdopted: a descriptor count that matches the listeners, and
// those descriptors the ones sent); it never panics or hangs.
func FuzzChildReceive(f *testing.F) {
	for _, c := range receiveCases {
		f.Add(c.state, c.more, c.fdspec)
	}
	p := fdtest.NewPalette(f)
	f.Fuzz(func(t *testing.T, state, more, fdspec string) {
		checkFDs := fdtest.Track(t, "receive")
		ch, sent, err := exchange(t, p, state, more, fdspec)
		if err == nil {
			checkAdopted(t, ch, sent)
		}
		closeChild(ch)
		checkFDs()
	})
}
