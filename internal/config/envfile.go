package config

import (
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"unicode/utf8"
)

// ReadEnvFile reads an environment file the way systemd reads one for
// EnvironmentFile= (systemd.exec(5)), so that one file serves a unit and
// `sockd run --env-file`: KEY=VALUE lines; empty lines, lines without
// "=" and lines starting with # or ; are skipped; leading and trailing
// white space of a value is dropped, interior white space kept; an
// unquoted value takes \ as an escape and a trailing \ continues the
// line; '…' keeps everything verbatim, across lines; "…" takes \ before
// " \ ` $ and newline, and keeps any other \ with its character. Unlike
// systemd, which skips them with a warning, a name that is not a shell
// variable name or invalid UTF-8 is an error naming the line: a reload
// must not go ahead on half of a file.
func ReadEnvFile(path string) ([]string, error) {
	// Non-blocking open: a FIFO with no writer is an error, not a hang.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%s)", path, fi.Mode().Type())
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxEnvFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxEnvFile {
		return nil, fmt.Errorf("%s: larger than %d MiB", path, MaxEnvFile>>20)
	}
	return ParseEnvFile(path, string(b))
}

// MaxEnvFile is the largest environment file ReadEnvFile reads: more
// than a worker's environment could carry (exec(2) takes at most a
// quarter of the stack limit, 2 MiB by default, for arguments and
// environment together).
const MaxEnvFile = 4 << 20

// ParseEnvFile is ReadEnvFile on text already read; name is for errors.
func ParseEnvFile(name, text string) ([]string, error) {
	const (
		preKey = iota
		key
		preValue
		value
		valueEscape
		single
		double
		doubleEscape
		comment
		commentEscape
	)
	var (
		out       []string
		state     = preKey
		k, v      []byte
		kTrail    = -1 // where trailing white space of the key starts
		vTrail    = -1 // likewise for an unquoted value
		line      = 1  // the line being read
		startLine = 1  // the line the assignment began on
	)
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' }
	// A lone carriage return ends a line too, as systemd has it.
	isNL := func(c byte) bool { return c == '\n' || c == '\r' }
	if i := strings.IndexByte(text, 0); i >= 0 {
		return nil, fmt.Errorf("%s:%d: a NUL byte (systemd refuses such a file)", name, 1+strings.Count(text[:i], "\n"))
	}
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch state {
		case preKey:
			switch {
			case c == '#' || c == ';':
				state = comment
			case isNL(c):
			case !isSpace(c):
				state, kTrail, startLine = key, -1, line
				k = append(k[:0], c)
			}
		case key:
			switch {
			case isNL(c):
				state, k = preKey, k[:0] // no "=": not an assignment
			case c == '=':
				state, vTrail, v = preValue, -1, []byte{}
			default:
				if !isSpace(c) {
					kTrail = -1
				} else if kTrail < 0 {
					kTrail = len(k)
				}
				k = append(k, c)
			}
		case preValue:
			switch {
			case isNL(c):
				if err := pushAt(&out, name, startLine, k, kTrail, v); err != nil {
					return nil, err
				}
				k, v, kTrail, vTrail = k[:0], nil, -1, -1
				state = preKey
			case c == '\'':
				state = single
			case c == '"':
				state = double
			case c == '\\':
				state = valueEscape
			case !isSpace(c):
				state = value
				v = append(v, c)
			}
		case value:
			switch {
			case isNL(c):
				if vTrail >= 0 {
					v = v[:vTrail]
				}
				if err := pushAt(&out, name, startLine, k, kTrail, v); err != nil {
					return nil, err
				}
				k, v, kTrail, vTrail = k[:0], nil, -1, -1
				state = preKey
			case c == '\\':
				state, vTrail = valueEscape, -1
			default:
				if !isSpace(c) {
					vTrail = -1
				} else if vTrail < 0 {
					vTrail = len(v)
				}
				v = append(v, c)
			}
		case valueEscape:
			state = value
			if !isNL(c) { // else a continued line
				v = append(v, c)
			}
		case single:
			if c == '\'' {
				state = preValue
			} else {
				v = append(v, c)
			}
		case double:
			switch c {
			case '"':
				state = preValue
			case '\\':
				state = doubleEscape
			default:
				v = append(v, c)
			}
		case doubleEscape:
			state = double
			switch {
			case strings.IndexByte("\"\\`$", c) >= 0:
				v = append(v, c)
			case c == '\n': // a continued line
			default:
				v = append(v, '\\', c)
			}
		case comment:
			switch {
			case c == '\\':
				state = commentEscape
			case isNL(c):
				state = preKey
			}
		case commentEscape:
			// systemd 252 (Debian 12) continues a comment ending in \ onto
			// the next line, 254 and later do not: the same file means two
			// things. Refused rather than guessed.
			if isNL(c) {
				return nil, fmt.Errorf("%s:%d: a comment ends in \\, which systemd before 254 continues onto the next line and later ones do not; remove the \\", name, line)
			}
			state = comment
		}
		if c == '\n' {
			line++
		}
	}
	switch state {
	case preValue, value, valueEscape, single, double, doubleEscape:
		if state == value && vTrail >= 0 {
			v = v[:vTrail]
		}
		if err := pushAt(&out, name, startLine, k, kTrail, v); err != nil {
			return nil, err
		}
	}
	return mergeEnv(nil, out...), nil
}

// pushAt adds the assignment k=v read from line of the file name.
func pushAt(out *[]string, name string, line int, k []byte, kTrail int, v []byte) error {
	if kTrail >= 0 {
		k = k[:kTrail]
	}
	key, val := string(k), string(v)
	switch {
	case !validName(key):
		return fmt.Errorf("%s:%d: %q is not a variable name (letters, digits and _, not starting with a digit)", name, line, key)
	case !utf8.ValidString(val):
		return fmt.Errorf("%s:%d: the value of %s is not valid UTF-8", name, line, key)
	}
	*out = append(*out, key+"="+val) // later ones win: see ReadEnvFile
	return nil
}

// validName: a shell variable name, as systemd requires of an
// environment variable's name.
func validName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// mergeEnv is env with each of vars ("K=V") set in turn: a variable
// already there keeps its place and takes the later value, a new one is
// appended. In one pass, whatever the number of variables.
func mergeEnv(env []string, vars ...string) []string {
	at := make(map[string]int, len(env)+len(vars))
	out := make([]string, 0, len(env)+len(vars))
	for _, kv := range append(env[:len(env):len(env)], vars...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := at[k]; ok {
			out[i] = kv
			continue
		}
		at[k] = len(out)
		out = append(out, kv)
	}
	return out
}
