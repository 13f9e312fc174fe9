package pm2

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Where Generate writes, below GenerateOptions.Root.
const (
	EnvDir  = "/etc/sockd"
	UnitDir = "/etc/systemd/system"
	// DropIn is the service drop-in's file name (sockd@APP.service.d/).
	DropIn = "50-pm2.conf"
	// ListenDropIn is the socket drop-in's name, shared with scripts/install.
	ListenDropIn = "50-listen.conf"
)

// systemd's PATH for system services, which an interpreter found
// elsewhere (nvm's node in a home directory) is put in front of.
const systemdPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// GenerateOptions says where and how Generate writes.
type GenerateOptions struct {
	// Root is the root file system to write below ("" is /): --root DIR.
	Root string
	// Overwrite replaces files whose content differs. Without it such a
	// file is an error (ErrExists) and nothing at all is written.
	Overwrite bool
	// Apps limits the output to these apps. Default: every app.
	Apps []string
}

// Output is one file Generate wrote or would write.
type Output struct {
	Path   string // below Root: /etc/sockd/api.env
	Status string // "created", "replaced", "unchanged"
	Mode   os.FileMode
	data   []byte
}

// Generated is what Generate did.
type Generated struct {
	Files []Output
	// Units to enable and start, in the file's order: sockd@APP.socket
	// for an app with a port, sockd@APP.service for one without (nothing
	// would ever connect to start it).
	Units []string
	// Warnings: the file's and each app's one line, and the apps'
	// instance names where they differ from the app's name.
	Warnings []string
}

// Generate turns the file into what systemd runs, one sockd@APP instance
// per app (units/sockd@.service and sockd@.socket):
//
//	/etc/sockd/APP.env                                 the app's Settings and Env (EnvironmentFile=, mode 0600: it holds the app's secrets)
//	/etc/systemd/system/sockd@APP.socket.d/50-listen.conf   ListenStream=PORT, for an app with a port
//	/etc/systemd/system/sockd@APP.service.d/50-pm2.conf     User=, ProtectHome=, ReadWritePaths=, where needed
//
// An app without a port gets SOCKD_LISTEN=none: sockd runs it with no
// listener (sockd@.socket's default unix socket stays unused). Files
// that exist with the same content are left alone; if one differs and
// Overwrite is not set, Generate writes nothing and says which.
func Generate(f *File, o GenerateOptions) (*Generated, error) {
	apps, err := f.Apps()
	if err != nil {
		return nil, err
	}
	g := &Generated{}
	if w := f.Warning(); w != "" {
		g.Warnings = append(g.Warnings, w)
	}
	var outs []Output
	instances := map[string]string{}
	for _, a := range apps {
		if len(o.Apps) > 0 && !contains(o.Apps, a.Name) {
			continue
		}
		inst := Instance(a.Name)
		if other, dup := instances[inst]; dup || inst == "" {
			return nil, newErr(ErrInvalid, f.Path, a.Name, "no systemd instance name: it would be %s, as for app %s; rename it (letters, digits, : _ . -)", quote(inst), quote(other))
		}
		instances[inst] = a.Name
		if inst != a.Name {
			g.Warnings = append(g.Warnings, fmt.Sprintf("%s: app %s runs as sockd@%s (systemd unit names take letters, digits and : _ . -)", f.Path, quote(a.Name), inst))
		}
		files, unit, err := unitFiles(f, a)
		if err != nil {
			return nil, err
		}
		outs = append(outs, files...)
		g.Units = append(g.Units, unit)
		if w := a.Warning(); w != "" {
			g.Warnings = append(g.Warnings, w)
		}
		if a.User == "" && dirOwner(a.Cwd) == "" {
			g.Warnings = append(g.Warnings, fmt.Sprintf("%s: app %s runs as the dynamic user of sockd@%s, to which %s is read-only (root owns it; PM2 ran the app as the user who ran pm2): if the app writes there, set uid in the file, chown the directory to the app's user, or add ReadWritePaths= in a drop-in", f.Path, quote(a.Name), inst, a.Cwd))
		}
	}
	for _, want := range o.Apps {
		if !contains(f.Names(), want) {
			return nil, newErr(ErrUnknownApp, f.Path, "", "no app named %s; the file has %s", quote(want), quoteList(f.Names()))
		}
	}
	root := o.Root
	if root == "" {
		root = "/"
	}
	var differ []string
	for i := range outs {
		old, err := os.ReadFile(filepath.Join(root, outs[i].Path))
		switch {
		case err == nil && bytes.Equal(old, outs[i].data):
			outs[i].Status = "unchanged"
		case err == nil:
			outs[i].Status = "replaced"
			differ = append(differ, outs[i].Path)
		case os.IsNotExist(err):
			outs[i].Status = "created"
		default:
			return nil, &Error{Kind: ErrExists, File: f.Path, Msg: "cannot read " + filepath.Join(root, outs[i].Path) + ": " + err.Error(), Err: err}
		}
	}
	if len(differ) > 0 && !o.Overwrite {
		return nil, newErr(ErrExists, f.Path, "", "not overwriting files that differ (nothing was written; pass --force to replace them): %s", strings.Join(differ, ", "))
	}
	for _, out := range outs {
		if out.Status == "unchanged" {
			continue
		}
		if err := writeFile(filepath.Join(root, out.Path), out.data, out.Mode); err != nil {
			return g, &Error{Kind: ErrExists, File: f.Path, Msg: err.Error(), Err: err}
		}
	}
	g.Files = outs
	return g, nil
}

// unitFiles builds an app's files and names the unit to enable.
func unitFiles(f *File, a *App) ([]Output, string, error) {
	inst := Instance(a.Name)
	fail := func(err error) ([]Output, string, error) {
		return nil, "", &Error{Kind: ErrInvalid, File: f.Path, App: a.Name, Msg: err.Error(), Err: err}
	}
	svc := serviceDropIn(a, inst)
	env, err := envFile(f, a, inst, svc != "")
	if err != nil {
		return fail(err)
	}
	outs := []Output{{Path: filepath.Join(EnvDir, inst+".env"), Mode: 0o600, data: env}}
	unit := "sockd@" + inst + ".service"
	if a.Port != 0 {
		outs = append(outs, Output{Path: filepath.Join(UnitDir, "sockd@"+inst+".socket.d", ListenDropIn), Mode: 0o644, data: []byte(fmt.Sprintf(
			"# Written by sockd pm2 %s (app %s, PORT %d).\n[Socket]\nListenStream=\nListenStream=%d\n", unitComment(f.opts.abs), unitComment(quote(a.Name)), a.Port, a.Port))})
		unit = "sockd@" + inst + ".socket"
	}
	if svc != "" {
		outs = append(outs, Output{Path: filepath.Join(UnitDir, "sockd@"+inst+".service.d", DropIn), Mode: 0o644, data: []byte(svc)})
	}
	return outs, unit, nil
}

// envFile writes the app's settings and environment for EnvironmentFile=.
func envFile(f *File, a *App, inst string, userInDropIn bool) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# /etc/sockd/%s.env: app %s of %s", inst, quote(a.Name), unitComment(f.opts.abs))
	if a.EnvName != "" {
		fmt.Fprintf(&b, " with env_%s", a.EnvName)
	}
	fmt.Fprintf(&b, ",\n# written by sockd pm2. After editing either: systemctl reload sockd@%s.service\n", inst)
	if w := a.Warning(); w != "" {
		fmt.Fprintf(&b, "# %s\n", unitComment(strings.TrimPrefix(w, a.file+": ")))
	}
	b.WriteString("\n# sockd's settings (sockd run --help)\n")
	s := a.Settings()
	if userInDropIn {
		delete(s, "SOCKD_USER") // the service's User=, in its drop-in
	}
	for _, k := range sortedSettings(s) {
		if err := writeVar(&b, k, s[k]); err != nil {
			return nil, err
		}
	}
	env := a.processEnv()
	if _, set := env["PATH"]; !set && a.Interpreter != "" && !inPath(filepath.Dir(a.Interpreter), systemdPath) {
		env = a.clone().processEnv()
		env["PATH"] = filepath.Dir(a.Interpreter) + ":" + systemdPath // as pm2 startup does
	}
	if len(env) > 0 {
		b.WriteString("\n# The app's environment\n")
	}
	for _, k := range sortedKeys(env) {
		if err := writeVar(&b, k, env[k]); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), nil
}

func writeVar(b *bytes.Buffer, k, v string) error {
	if err := checkEnvFileVar(k, v); err != nil {
		return err
	}
	fmt.Fprintf(b, "%s=%s\n", k, envFileValue(v))
	return nil
}

func inPath(dir, path string) bool {
	return contains(filepath.SplitList(path), dir)
}

// serviceDropIn returns the service drop-in an app needs, "" if none:
//   - its user: uid/gid from the file, else the owner of its directory
//     when that is not root (PM2 ran the app as the user who ran pm2,
//     and the app may write where it lives), with DynamicUser=no and the
//     app's directory writable (the template's ProtectSystem=strict
//     makes everything else read-only);
//   - ProtectHome=read-only when the app, its script or its interpreter
//     lives under /home, /root or /run/user (the template hides those);
//   - a valid dynamic user name when sockd-APP is not one.
func serviceDropIn(a *App, inst string) string {
	var lines []string
	usr, grp := a.User, a.Group
	if usr == "" {
		usr = dirOwner(a.Cwd)
	}
	if usr != "" {
		lines = append(lines, "DynamicUser=no", "User="+unitValue(usr))
		if grp != "" {
			lines = append(lines, "Group="+unitValue(grp))
		}
		lines = append(lines, "ReadWritePaths="+unitValue(a.Cwd))
	} else if name := "sockd-" + inst; !strictUserName(name) {
		lines = append(lines, "User="+dynamicUser(a.Name))
	}
	for _, p := range []string{a.Cwd, a.Script, a.Interpreter} {
		if underHome(p) {
			lines = append(lines, "ProtectHome=read-only")
			break
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return fmt.Sprintf("# Written by sockd pm2 (app %s): what PM2 gave the app that the\n# sockd@ template does not.\n[Service]\n%s\n", unitComment(quote(a.Name)), strings.Join(lines, "\n"))
}

func underHome(p string) bool {
	for _, d := range []string{"/home/", "/root/", "/run/user/"} {
		if strings.HasPrefix(p, d) || p+"/" == d {
			return true
		}
	}
	return false
}

// dirOwner names the owner of dir when it is not root, "" otherwise.
func dirOwner(dir string) string {
	st, err := os.Stat(dir)
	if err != nil {
		return ""
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || sys.Uid == 0 {
		return ""
	}
	id := strconv.FormatUint(uint64(sys.Uid), 10)
	if u, err := user.LookupId(id); err == nil {
		return u.Username
	}
	return id
}

// Instance is the systemd instance name of an app: the name itself when
// it is made of letters, digits and : _ . - (not starting with . or -),
// else the name with every run of other characters made one "-". Not
// systemd-escape's \xNN form: the template's EnvironmentFile= is a glob,
// in which a backslash escapes the next character, so
// /etc/sockd/%i.env would never find a file named with \x20 in it.
func Instance(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range name {
		if unitChar(r) {
			b.WriteRune(r)
			dash = false
		} else if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimLeft(b.String(), ".-")
}

func unitChar(r rune) bool {
	return r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(":_.-", r))
}

// strictUserName: a user name every tool accepts (systemd's strict rule):
// a letter or _, then letters, digits, _ or -, at most 31 bytes.
func strictUserName(s string) bool {
	if s == "" || len(s) > 31 || !(s[0] == '_' || s[0]|0x20 >= 'a' && s[0]|0x20 <= 'z') {
		return false
	}
	for _, c := range []byte(s) {
		if !(c == '_' || c == '-' || c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'z') {
			return false
		}
	}
	return true
}

// dynamicUser derives a valid user name from an app name: sockd-, the
// name's valid characters, and a hash of the name that keeps two apps
// apart.
func dynamicUser(name string) string {
	sum := sha256.Sum256([]byte(name))
	var clean strings.Builder
	for _, c := range []byte(name) {
		if c == '_' || c == '-' || c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'z' {
			clean.WriteByte(c)
		}
	}
	base := clean.String()
	if len(base) > 16 {
		base = base[:16]
	}
	return "sockd-" + base + "-" + hex.EncodeToString(sum[:])[:8]
}

// unitComment keeps a value on its comment line.
func unitComment(s string) string { return strings.NewReplacer("\n", " ", "\r", " ").Replace(s) }

// writeFile writes data to path atomically (a temporary file renamed over
// it), creating its directory.
func writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // gone after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
