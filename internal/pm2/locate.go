package pm2

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// PM2's interpreters by the script's extension (lib/API/interpreter.json).
var interpreters = map[string]string{
	".sh": "bash", ".py": "python", ".rb": "ruby", ".php": "php", ".pl": "perl",
	".js": "node", ".coffee": "coffee", ".ls": "lsc", ".ts": "bun", ".tsx": "bun",
}

// locate resolves what depends on the file system, as PM2's
// prepareAppConf does when it starts the app: the working directory, the
// script, its interpreter, and from that the exec mode.
func (a *App) locate(o *Options) error {
	fail := func(format string, args ...any) error { return newErr(ErrInvalid, o.Path, a.Name, format, args...) }
	r := &reader{obj: a.raw, file: o.Path, app: a.Name}

	a.Cwd = o.Dir
	if cwd, ok := r.str("cwd"); ok && cwd != "" {
		a.Cwd = absFrom(o.Dir, cwd)
	}
	if st, err := os.Stat(a.Cwd); err != nil || !st.IsDir() {
		hint := ""
		if strings.HasPrefix(a.Cwd, "~") || strings.Contains(a.Cwd, "/~/") {
			hint = " (PM2 does not expand ~ either: write the full path)"
		}
		return fail("cwd %s is not a directory%s", a.Cwd, hint)
	}

	script, _ := r.str("script")
	var args []string
	if strings.Contains(script, " ") {
		// PM2 runs a script with a space in it as a shell command (and
		// drops args).
		script, args = "bash", []string{"-c", script}
		if _, err := lookPath("bash", o.path()); err != nil {
			script = "sh"
		}
	}
	if script == "serve" {
		return fail("script 'serve' is PM2's own static file server, which sockd does not have")
	}
	path := absFrom(a.Cwd, script)
	if _, err := os.Stat(path); err != nil {
		found, lerr := lookPath(script, o.path())
		if lerr != nil {
			return fail("script not found: %s", path)
		}
		path = found
	}
	a.Script = path
	if args != nil {
		a.Args = args
	}
	if err := a.interpreter(r, o); err != nil {
		return err
	}
	return a.execMode(r)
}

// interpreter resolves exec_interpreter as PM2's resolveInterpreter does:
// by the extension, else node for a text file and none for a binary.
func (a *App) interpreter(r *reader, o *Options) error {
	name, set := r.str("exec_interpreter")
	if !set || name == "" {
		if known, ok := interpreters[filepath.Ext(a.Script)]; ok {
			name = known
			if name == "python" {
				if _, err := lookPath("python", o.path()); err != nil {
					name = "python3"
				}
			}
		} else if isBinary(a.Script) {
			name = "none"
		} else {
			name = "node"
		}
	}
	if name == "none" {
		a.Interpreter = ""
		if err := unix.Access(a.Script, unix.X_OK); err != nil {
			return newErr(ErrInvalid, o.Path, a.Name, "script %s runs directly (interpreter none) but is not executable", a.Script)
		}
		return nil
	}
	var path string
	var err error
	if name == "node" && o.Node != "" {
		path = o.Node
	} else if strings.Contains(name, "/") {
		path = absFrom(o.Dir, name)
		if st, serr := os.Stat(path); serr != nil || st.IsDir() || unix.Access(path, unix.X_OK) != nil {
			err = fs.ErrNotExist
		}
	} else {
		path, err = lookPath(name, o.path())
	}
	if err != nil {
		return newErr(ErrInvalid, o.Path, a.Name, "interpreter %s not found (in PATH %s)", quote(name), quote(o.path()))
	}
	a.Interpreter = path
	if strings.Contains(name, "python") {
		if _, set := a.Env["PYTHONUNBUFFERED"]; !set {
			a.Env["PYTHONUNBUFFERED"] = "1" // as PM2 does
		}
	}
	return nil
}

// isNode says whether the interpreter is node (or bun): what PM2's
// cluster mode runs.
func (a *App) isNode() bool {
	b := filepath.Base(a.Interpreter)
	return a.Interpreter != "" && (strings.HasSuffix(b, "node") || strings.HasSuffix(b, "bun"))
}

// execMode chooses cluster or fork as PM2's determineExecMode does, and
// refuses fork mode with several instances on a port.
func (a *App) execMode(r *reader) error {
	mode, _ := r.str("exec_mode")
	mode = strings.TrimSuffix(mode, "_mode")
	if b, _ := r.boolean("execute_command"); b {
		mode = "fork"
	}
	if mode == "" {
		mode = "fork"
		if a.instancesSet && a.Instances >= -1 && a.isNode() {
			mode = "cluster"
		}
	}
	a.ExecMode = mode
	if mode == "fork" && a.Instances != 1 && a.Port != 0 {
		return newErr(ErrInvalid, r.file, a.Name, "exec_mode fork with instances %s and PORT %d: under PM2 each instance is a process of its own that binds the port itself; sockd's workers share one socket on it, which is cluster mode: set exec_mode: 'cluster' (or instances: 1)", a.WorkersSpec(), a.Port)
	}
	if a.Port != 0 && !a.NodeLike() {
		run := "runs directly"
		if a.Interpreter != "" {
			run = "runs with " + filepath.Base(a.Interpreter)
		}
		a.Notes = append(a.Notes, fmt.Sprintf("it %s, not Node.js: sockd binds PORT %d and hands the socket to each worker as fd 3 (LISTEN_FDS, as systemd's socket activation); an app that binds the port itself fails with 'address already in use': make it take fd 3", run, a.Port))
	}
	return nil
}

// absFrom resolves p against dir, as path.resolve(dir, p).
func absFrom(dir, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(dir, p)
}

// lookPath finds an executable file in path, as PM2's which: a name with
// a slash is taken as it is.
func lookPath(name, path string) (string, error) {
	if name == "" {
		return "", fs.ErrNotExist
	}
	if strings.Contains(name, "/") {
		if executable(name) {
			return filepath.Abs(name)
		}
		return "", fs.ErrNotExist
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue // relative PATH entries depend on a cwd nobody chose
		}
		if p := filepath.Join(dir, name); executable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, fs.ErrNotExist)
}

func executable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && unix.Access(p, unix.X_OK) == nil
}

// isBinary says whether a file looks like a program rather than a
// script: a NUL byte, or mostly bytes that are not text, in its first
// 512 bytes. A directory or an unreadable file is not binary (PM2 hands
// those to node).
func isBinary(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	buf := make([]byte, 512)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return false
	}
	buf = buf[:n]
	if len(buf) == 0 {
		return false
	}
	odd := 0
	for i := 0; i < len(buf); {
		c := buf[i]
		if c == 0 {
			return true
		}
		if c >= 0x80 {
			r, size := utf8.DecodeRune(buf[i:])
			if r != utf8.RuneError || size > 1 {
				i += size
				continue
			}
			if len(buf)-i < utf8.UTFMax && i > 0 {
				break // a character cut at the end of the buffer
			}
		}
		if c < 32 && (c < 7 || c > 14) && c != 27 {
			odd++
		} else if c >= 0x80 {
			odd++
		}
		i++
	}
	return odd*10 > len(buf)
}
