package metrics

import (
	"net"
	"path/filepath"
	"strconv"
	"testing"
)

// Serves tells whether an inherited metrics socket is the one --metrics
// names, on real listeners.
func TestServes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.sock")
	unixLn, err := Listen("unix://" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer unixLn.Close()
	loop, err := Listen("tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer loop.Close()
	port := strconv.Itoa(loop.Addr().(*net.TCPAddr).Port)
	any4, err := Listen("tcp://0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer any4.Close()
	port4 := strconv.Itoa(any4.Addr().(*net.TCPAddr).Port)
	anyBoth, err := Listen("tcp://:0")
	if err != nil {
		t.Fatal(err)
	}
	defer anyBoth.Close()
	portBoth := strconv.Itoa(anyBoth.Addr().(*net.TCPAddr).Port)
	for _, c := range []struct {
		ln   net.Listener
		addr string
		want bool
	}{
		{unixLn, "unix://" + path, true},
		{unixLn, "unix://" + path + "2", false},
		{unixLn, "tcp://127.0.0.1:" + port, false},
		{loop, "tcp://127.0.0.1:" + port, true},
		{loop, "tcp4://127.0.0.1:" + port, true},
		{loop, "tcp://localhost:" + port, true},
		{loop, "tcp://127.0.0.1:0", true},
		{loop, "tcp://127.0.0.2:" + port, false},
		{loop, "tcp://0.0.0.0:" + port, false},
		{loop, "tcp://127.0.0.1:1", false},
		{loop, "unix://" + path, false},
		{any4, "tcp://0.0.0.0:" + port4, true},
		{any4, "tcp4://:" + port4, true},
		{any4, "tcp://:" + port4, false},
		{any4, "tcp://[::]:" + port4, false},
		{anyBoth, "tcp://:" + portBoth, true},
		{anyBoth, "tcp://[::]:" + portBoth, true},
		{anyBoth, "tcp://0.0.0.0:" + portBoth, false},
		{loop, "%zz", false},
		{nil, "tcp://127.0.0.1:" + port, false},
	} {
		if got := Serves(c.ln, c.addr); got != c.want {
			name := "<nil>"
			if c.ln != nil {
				name = c.ln.Addr().String()
			}
			t.Errorf("Serves(%s, %q) = %v, want %v", name, c.addr, got, c.want)
		}
	}
}

// Prometheus asks for OpenMetrics with a quality; q=0 refuses it.
func TestAcceptsOpenMetrics(t *testing.T) {
	for accept, want := range map[string]bool{
		"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1": true,
		"application/openmetrics-text; q=0":   false,
		"text/plain;version=0.0.4":            false,
		"":                                    false,
		"Application/OpenMetrics-Text; Q=0.5": true,
		"text/plain, application/openmetrics-text;q=0.0": false,
	} {
		if got := acceptsOpenMetrics(accept); got != want {
			t.Errorf("acceptsOpenMetrics(%q) = %v, want %v", accept, got, want)
		}
	}
}
