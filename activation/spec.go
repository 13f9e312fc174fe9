package activation

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/sockd/sockd/internal/listenfds"
)

// DefaultName is what sd_listen_fds_with_names(3) reports for a socket
// passed without a name. (A --listen spec without a name is named after
// its address.)
const DefaultName = listenfds.DefaultName

// Spec describes one listener sockd binds itself, parsed from
// "[NAME=]URL" (the --listen flag).
type Spec struct {
	// Name is the listener's entry in LISTEN_FDNAMES.
	Name string
	// Network is "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6" or "unix".
	Network string
	// Address is "host:port" for IP networks and a file system path for unix.
	Address string
	// Mode is the permission of a unix socket file; 0 leaves it as the
	// umask made it.
	Mode os.FileMode
}

// String formats the spec back into the form ParseSpec reads.
func (s Spec) String() string {
	u := s.Network + "://" + s.Address
	if s.Network == "unix" {
		// A path may hold '%', '?', '#' or spaces: escaped as in the URL.
		u = "unix://" + (&url.URL{Path: s.Address}).EscapedPath()
	}
	if s.Mode != 0 {
		u += fmt.Sprintf("?mode=%04o", s.Mode)
	}
	return s.Name + "=" + u
}

// ParseSpec parses "[NAME=]URL" where URL is tcp://HOST:PORT, tcp4://,
// tcp6://, udp://HOST:PORT (also udp4, udp6) or unix:///path[?mode=0660].
func ParseSpec(s string) (Spec, error) {
	name, raw := "", s
	if i := strings.Index(s, "="); i >= 0 && !strings.Contains(s[:i], "://") {
		name, raw = s[:i], s[i+1:]
		if err := checkName(name); err != nil {
			return Spec{}, fmt.Errorf("listen %q: %w", s, err)
		}
	}
	if !strings.Contains(raw, "://") {
		return Spec{}, fmt.Errorf("listen %q: want [NAME=]SCHEME://ADDRESS, e.g. http=tcp://127.0.0.1:8080", s)
	}
	u, err := url.Parse(raw)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return Spec{}, fmt.Errorf("listen %q: %v", s, err)
	}
	if u.Scheme == "" {
		return Spec{}, fmt.Errorf("listen %q: want [NAME=]SCHEME://ADDRESS, e.g. http=tcp://127.0.0.1:8080", s)
	}
	spec := Spec{Name: name, Network: u.Scheme}
	switch u.Scheme {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
		err = spec.parseIP(u)
	case "unix":
		err = spec.parseUnix(u)
	default:
		err = fmt.Errorf("unsupported scheme %q (want tcp, tcp4, tcp6, udp, udp4, udp6 or unix)", u.Scheme)
	}
	if err != nil {
		return Spec{}, fmt.Errorf("listen %q: %w", s, err)
	}
	if spec.Name == "" {
		spec.Name = spec.addressName()
	}
	return spec, nil
}

func (s *Spec) parseIP(u *url.URL) error {
	if u.Path != "" || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("unexpected path, query or user in %s address", u.Scheme)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return fmt.Errorf("address %q: want HOST:PORT", u.Host)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return fmt.Errorf("port %q: want a number from 0 to 65535", port)
	}
	if host != "" && net.ParseIP(host) == nil && !validHostname(host) {
		return fmt.Errorf("host %q is neither an IP address nor a host name", host)
	}
	s.Address = net.JoinHostPort(host, port)
	return nil
}

// MaxUnixPath is the longest path a unix socket address holds (sun_path
// is 108 bytes with its NUL; unix(7)).
const MaxUnixPath = 107

// CheckUnixPath refuses a socket path too long to bind or connect to,
// which the kernel would refuse with a bare EINVAL.
func CheckUnixPath(path string) error {
	if len(path) > MaxUnixPath {
		return fmt.Errorf("path %.40q… is %d bytes: a unix socket path holds at most %d (unix(7)); use a shorter one", path, len(path), MaxUnixPath)
	}
	return nil
}

func (s *Spec) parseUnix(u *url.URL) error {
	path := u.Path
	if u.Host != "" || path == "" || !strings.HasPrefix(path, "/") {
		return fmt.Errorf("want unix:///absolute/path")
	}
	if strings.IndexByte(path, 0) >= 0 {
		return fmt.Errorf("path %q holds a NUL byte", path)
	}
	if err := CheckUnixPath(path); err != nil {
		return err
	}
	s.Address = path
	for k, v := range u.Query() {
		if k != "mode" {
			return fmt.Errorf("unknown option %q (only mode=0NNN)", k)
		}
		m, err := strconv.ParseUint(v[0], 8, 32)
		if err != nil || m > 0o777 || m == 0 {
			return fmt.Errorf("mode %q: want octal permission bits like 0660", v[0])
		}
		s.Mode = os.FileMode(m)
	}
	return nil
}

// checkName enforces what systemd accepts in FileDescriptorName=: up to 255
// printable ASCII characters, no colon.
// addressName names a listener its spec does not name after its
// address, in what LISTEN_FDNAMES allows: tcp-127.0.0.1-8080,
// tcp6-..1-8443, unix-app.sock.
func (s Spec) addressName() string {
	a := s.Address
	if s.Network == "unix" {
		a = a[strings.LastIndexByte(a, '/')+1:]
	} else if host, port, err := net.SplitHostPort(a); err == nil {
		if host == "" {
			host = "any"
		}
		a = host + "-" + port
	}
	b := []byte(s.Network + "-" + a)
	for i, c := range b {
		if c < 0x21 || c > 0x7e || c == ':' || c == '=' {
			b[i] = '.'
		}
	}
	return string(b[:min(len(b), 255)])
}

func checkName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("name must be 1 to 255 characters")
	}
	for _, r := range name {
		if r < 0x21 || r > 0x7e || r == ':' {
			return fmt.Errorf("name %q: only printable ASCII without ':' or spaces", name)
		}
	}
	return nil
}

func validHostname(h string) bool {
	for _, r := range h {
		if !(r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return h != ""
}
