package main

// `sockd man [roff|bash|zsh]` (hidden): the manual page sockd(8) and the
// shell completions, generated from the flag definitions that --help
// prints, so the three cannot drift apart. scripts/package runs it.
//
// The generator (writeMan, writeBash, writeZsh) takes each command's
// *flag.FlagSet. Today the FlagSets are built inside the commands
// (parseRun, clientCommand, topCommand), so commandFlags gets them back
// from the commands' own --help text and checks that the FlagSet it
// rebuilt prints exactly that text again; once the commands expose their
// FlagSets, pass those to manPage directly and drop the adapter.

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/sockd/sockd/internal/config"
)

// manCmd is one command of sockd: its synopsis line from helpText, its
// own usage line and text, and its flags (nil: none).
type manCmd struct {
	Name, Synopsis, Summary string
	Usage, Text             string
	Flags                   *flag.FlagSet
}

// manPage is what the generator needs: the commands, the first of them
// `run`, whose flags are also read from SOCKD_<FLAG>.
type manPage struct {
	Version, Date string
	Intro         string // what sockd is, one paragraph
	Commands      []manCmd
	// Defaults replaces a flag's DefValue where the default is computed on
	// the machine that runs sockd (the number of CPUs), not the one that
	// generated the page.
	Defaults map[string]string
}

func manCommand(args []string, stdout, stderr io.Writer) int {
	format := "roff"
	if len(args) > 0 {
		format = args[0]
	}
	if len(args) == 1 && (format == "-h" || format == "--help" || format == "-help") {
		return sockd([]string{"help", "man"}, stdout, stderr)
	}
	if len(args) > 1 || (format != "roff" && format != "bash" && format != "zsh" && format != "markdown") {
		fmt.Fprintln(stderr, "sockd: usage: sockd man [roff|bash|zsh|markdown]")
		return exitUsage
	}
	p, err := sockdManPage()
	if err != nil {
		fmt.Fprintf(stderr, "sockd: man: %s\n", oneLine(err))
		return exitFailed
	}
	var b bytes.Buffer
	switch format {
	case "roff":
		writeMan(&b, p)
	case "bash":
		writeBash(&b, p)
	case "zsh":
		writeZsh(&b, p)
	case "markdown":
		writeMarkdown(&b)
	}
	if _, err := stdout.Write(b.Bytes()); err != nil {
		fmt.Fprintf(stderr, "sockd: man: %v\n", err)
		return exitFailed
	}
	return exitOK
}

// sockdManPage collects the command list from helpText and each command's
// flags from its --help.
func sockdManPage() (manPage, error) {
	p := manPage{Version: version, Date: time.Now().UTC().Format("2006-01-02"), Defaults: map[string]string{}}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" { // reproducible builds
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return p, fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", s, err)
		}
		p.Date = time.Unix(n, 0).UTC().Format("2006-01-02")
	}
	intro, list, ok := strings.Cut(helpText, "\nUsage:\n")
	if !ok {
		return p, errors.New("helpText has no Usage: section")
	}
	p.Intro = strings.Join(strings.Fields(intro), " ")
	list, _, _ = strings.Cut(list, "\n\n")
	for _, line := range strings.Split(list, "\n") {
		syn, summary, _ := strings.Cut(strings.TrimSpace(line), "   ")
		f := strings.Fields(syn)
		if len(f) < 2 || f[0] != "sockd" {
			return p, fmt.Errorf("helpText: unexpected line %q", line)
		}
		c := manCmd{Name: f[1], Synopsis: syn, Summary: strings.TrimSpace(summary)}
		var help bytes.Buffer
		switch c.Name {
		case "run":
			c.Usage, c.Text, c.Flags = config.Synopsis, config.About, runFlags()
		case "top":
			topCommand([]string{"--help"}, &help)
		case "status", "reload", "upgrade", "scale":
			clientCommand(c.Name, []string{"--help"}, &help)
		case "signal", "send":
			tellCommand(c.Name, []string{"--help"}, &help)
		case "pm2":
			pm2Command([]string{"--help"}, &help)
		case "logs":
			logsCommand([]string{"--help"}, &help)
		}
		if help.Len() > 0 {
			var err error
			if c.Usage, c.Text, c.Flags, err = commandFlags(help.String()); err != nil {
				return p, fmt.Errorf("sockd %s --help: %w", c.Name, err)
			}
		}
		p.Commands = append(p.Commands, c)
	}
	if len(p.Commands) == 0 || p.Commands[0].Name != "run" || p.Commands[0].Flags == nil {
		return p, errors.New("helpText does not list sockd run first")
	}
	return p, nil
}

// runFlags is sockd run's settings (internal/config) as a FlagSet.
func runFlags() *flag.FlagSet {
	fs := flag.NewFlagSet("sockd run", flag.ContinueOnError)
	for _, s := range config.Settings() {
		if s.Switch() {
			fs.Bool(s.Name, false, s.Help)
		} else {
			fs.Var(&textValue{s.Default}, s.Name, "`"+s.Arg+"` "+s.Help)
		}
	}
	return fs
}

// commandFlags reads a command's --help (usageFunc's layout, then
// flag.PrintDefaults) back into its usage line, text and FlagSet.
func commandFlags(help string) (usage, text string, fs *flag.FlagSet, err error) {
	head, defaults, ok := strings.Cut(help, "\nFlags (")
	if !ok {
		return "", "", nil, errors.New("no Flags section")
	}
	usage, text, _ = strings.Cut(strings.TrimPrefix(head, "Usage: "), "\n\n")
	_, defaults, _ = strings.Cut(defaults, ":\n")
	fs = flag.NewFlagSet("sockd", flag.ContinueOnError)
	lines := strings.Split(strings.TrimSuffix(defaults, "\n"), "\n")
	for i := 0; i < len(lines); {
		hdr := lines[i]
		if !strings.HasPrefix(hdr, "  -") {
			return "", "", nil, fmt.Errorf("unexpected line %q", hdr)
		}
		var name, arg string
		var use []string
		if n, u, short := strings.Cut(hdr[3:], "\t"); short { // a one-letter bool: "  -x\tusage"
			name, use = n, []string{u}
		} else {
			name, arg, _ = strings.Cut(hdr[3:], " ")
		}
		for i++; i < len(lines) && strings.HasPrefix(lines[i], "    \t"); i++ {
			use = append(use, lines[i][5:])
		}
		addFlag(fs, name, arg, strings.Join(use, "\n"))
	}
	var again bytes.Buffer
	fs.SetOutput(&again)
	fs.PrintDefaults()
	if again.String() != defaults {
		return "", "", nil, fmt.Errorf("the flags read back print differently:\n%s\nwant:\n%s", again.String(), defaults)
	}
	return usage, strings.TrimSpace(text), fs, nil
}

// addFlag defines name on fs so that PrintDefaults prints it as it was
// printed: arg is the name UnquoteUsage gave, usage ends with the default.
func addFlag(fs *flag.FlagSet, name, arg, usage string) {
	def, quoted := "", false
	if i := strings.LastIndex(usage, " (default "); i >= 0 && strings.HasSuffix(usage, ")") {
		v := usage[i+len(" (default ") : len(usage)-1]
		if s, err := strconv.Unquote(v); err == nil && strings.HasPrefix(v, `"`) {
			def, quoted, usage = s, true, usage[:i]
		} else if arg == "" || arg == "duration" || arg == "int" || arg == "uint" || arg == "float" {
			def, usage = v, usage[:i]
		}
		// Otherwise the text is part of the usage (a flag.Value of its own
		// prints its default unquoted too; both print the same).
	}
	switch arg {
	case "":
		fs.Bool(name, def == "true", usage)
		return
	case "duration":
		d, _ := time.ParseDuration(def)
		fs.Duration(name, d, usage)
		return
	case "int":
		n, _ := strconv.Atoi(def)
		fs.Int(name, n, usage)
		return
	case "uint":
		n, _ := strconv.ParseUint(def, 10, 64)
		fs.Uint64(name, n, usage)
		return
	case "float":
		n, _ := strconv.ParseFloat(def, 64)
		fs.Float64(name, n, usage)
		return
	case "string":
		fs.String(name, def, usage)
		return
	}
	if arg != "value" { // the argument's name was `quoted` in the usage
		if i := strings.Index(usage, arg); i >= 0 {
			usage = usage[:i] + "`" + arg + "`" + usage[i+len(arg):]
		} else {
			usage = "`" + arg + "` " + usage
		}
	}
	if quoted {
		fs.String(name, def, usage)
	} else {
		fs.Var(&textValue{def}, name, usage)
	}
}

// textValue is a flag.Value that only holds its text.
type textValue struct{ s string }

func (v *textValue) String() string     { return v.s }
func (v *textValue) Set(s string) error { v.s = s; return nil }

// defaultOf is the default --help shows for f ("" for none), as
// flag.PrintDefaults decides it.
func (p manPage) defaultOf(f *flag.Flag) string {
	if d, ok := p.Defaults[f.Name]; ok {
		return d
	}
	zero := reflect.New(reflect.TypeOf(f.Value).Elem()).Interface().(flag.Value).String()
	if f.DefValue == zero {
		return ""
	}
	return f.DefValue
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// envName is the variable sockd run also reads the flag from.
func envName(name string) string {
	return "SOCKD_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// roff escapes text for a man page: backslashes, dashes (minus signs
// in options and commands), a leading dot or quote, and non-ASCII as
// groff's \[uXXXX].
func roff(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\e`)
		case r == '-':
			b.WriteString(`\-`)
		case (r == '.' || r == '\'') && (i == 0 || s[i-1] == '\n'):
			b.WriteString(`\&` + string(r))
		case r > unicode.MaxASCII:
			fmt.Fprintf(&b, `\[u%04X]`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// paragraphs writes text as roff paragraphs: lines joined, blank lines
// separating paragraphs.
func paragraphs(w io.Writer, text string) {
	for i, para := range strings.Split(strings.TrimSpace(text), "\n\n") {
		if i > 0 {
			fmt.Fprintln(w, ".PP")
		}
		fmt.Fprintln(w, roff(strings.Join(strings.Fields(para), " ")))
	}
}

func writeMan(w io.Writer, p manPage) {
	run := p.Commands[0]
	fmt.Fprintf(w, ".\\\" sockd(8), generated by \"sockd man\" (sockd %s) from the flag definitions; do not edit.\n", p.Version)
	fmt.Fprintf(w, ".TH SOCKD 8 %q %q \"System Administration\"\n", p.Date, "sockd "+p.Version)
	fmt.Fprintln(w, ".nh\n.ad l") // no hyphenation, ragged right: flags and paths stay whole
	fmt.Fprintln(w, ".SH NAME")
	fmt.Fprintln(w, `sockd \- run N copies of a socket\-activated server and reload them without downtime`)
	fmt.Fprintln(w, ".SH SYNOPSIS")
	for i, c := range p.Commands {
		if i > 0 {
			fmt.Fprintln(w, ".br")
		}
		fmt.Fprintf(w, ".B %s\n", roff(c.synopsis()))
	}
	fmt.Fprintln(w, ".SH DESCRIPTION")
	paragraphs(w, p.Intro)
	fmt.Fprintln(w, ".PP")
	paragraphs(w, run.Text)
	fmt.Fprintln(w, ".PP")
	fmt.Fprintln(w, roff("The worker contract, reloads, binary upgrades and the units are described in README.md, reference.md and systemd.md, in /usr/share/doc/sockd with the package (README.md and docs/ in the source tree)."))
	fmt.Fprintln(w, ".SH COMMANDS")
	for _, c := range p.Commands {
		fmt.Fprintf(w, ".TP\n.B %s\n%s\n", roff(c.synopsis()), roff(c.Summary+"."))
		if c.Text != "" && c.Name != "run" {
			fmt.Fprintln(w, ".IP")
			paragraphs(w, c.Text)
		}
	}
	fmt.Fprintln(w, ".SH OPTIONS")
	fmt.Fprintln(w, roff("The flags of sockd run. Each is also read from the environment variable SOCKD_<FLAG> (dashes become underscores); the command line wins. A repeatable flag's variable holds values separated by spaces. Flags take one dash or two."))
	manFlags(w, p, run.Flags, true)
	for _, c := range p.Commands[1:] {
		if c.Flags == nil {
			continue
		}
		fmt.Fprintf(w, ".SS %s\n", roff(c.Usage))
		manFlags(w, p, c.Flags, false)
	}
	fmt.Fprintln(w, ".SH ENVIRONMENT")
	fmt.Fprintln(w, ".TP\n.B SOCKD_<FLAG>")
	fmt.Fprintln(w, roff("Every flag of sockd run, as listed under OPTIONS."))
	fmt.Fprintln(w, ".TP\n.B LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES")
	fmt.Fprintln(w, roff("The listening sockets systemd passes (sd_listen_fds(3)); sockd passes its workers the same variables."))
	fmt.Fprintln(w, ".TP\n.B NOTIFY_SOCKET, WATCHDOG_USEC")
	fmt.Fprintln(w, roff("systemd's notification socket and watchdog (sd_notify(3)); workers get a NOTIFY_SOCKET of sockd's."))
	fmt.Fprintln(w, ".SH SIGNALS")
	for _, s := range manSignals {
		fmt.Fprintf(w, ".TP\n.B %s\n%s\n", roff(s[0]), roff(s[1]))
	}
	fmt.Fprintln(w, ".SH EXIT STATUS")
	for _, e := range manExits {
		fmt.Fprintf(w, ".TP\n.B %d\n%s\n", e.code, roff(e.text))
	}
	fmt.Fprintln(w, ".SH FILES")
	for _, f := range manFiles {
		fmt.Fprintf(w, ".TP\n.I %s\n%s\n", roff(f[0]), roff(f[1]))
	}
	fmt.Fprintln(w, ".SH SEE ALSO")
	fmt.Fprintln(w, `.BR systemctl (1),
.BR systemd.service (5),
.BR systemd.socket (5),
.BR sd_listen_fds (3),
.BR sd_notify (3)`)
}

func manFlags(w io.Writer, p manPage, fs *flag.FlagSet, env bool) {
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		if arg == "" {
			fmt.Fprintf(w, ".TP\n.B \\-\\-%s\n", roff(f.Name))
		} else {
			fmt.Fprintf(w, ".TP\n.BI \\-\\-%s \" %s\"\n", roff(f.Name), strings.ReplaceAll(roff(arg), `"`, `\(dq`))
		}
		text := strings.Join(strings.Fields(usage), " ")
		if d := p.defaultOf(f); d != "" {
			text += " (default: " + d + ")"
		}
		if env {
			text += ". Environment: " + envName(f.Name) + "."
		}
		fmt.Fprintln(w, roff(text))
	})
}

// The man page's tables of what --help does not say; the exit codes are
// the constants the commands return.
var (
	manSignals = [][2]string{
		{"SIGTERM, SIGINT, SIGQUIT", "stop: every worker drains (the stop signal, then SIGKILL after --stop-timeout), then sockd exits 0"},
		{"SIGHUP", "reload, as sockd reload"},
		{"SIGUSR2", "binary upgrade, as sockd upgrade"},
		{"SIGTTIN, SIGTTOU", "one worker more, one fewer, as sockd scale +1 and -1"},
	}
	manExits = []struct {
		code int
		text string
	}{
		{exitOK, "stopped cleanly; a client command was done"},
		{exitFailed, "internal error; a client request failed (a reload rolled back, an upgrade refused)"},
		{exitUsage, "bad flag, environment value, listen URL, worker command or user"},
		{exitListeners, "sockd run cannot bind or take the listening sockets, the control socket or the metrics address"},
		{exitWorkers, "sockd run: workers crashed beyond --restart-limit"},
		{exitUnreachable, "client commands: no sockd answers on the control socket"},
		{exitResources, "sockd run: not enough descriptors, processes, memory or disk for the pool"},
	}
	manFiles = [][2]string{
		{"/usr/lib/systemd/system/sockd.socket, sockd.service", "the plain pair: the sockets, and sockd on them"},
		{"/usr/lib/systemd/system/sockd@.socket, sockd@.service", "the template, one sockd per application"},
		{"/etc/sockd/example.env", "the example of /etc/sockd/INSTANCE.env, the settings of sockd@INSTANCE.service"},
		{"/run/sockd/sockd.sock", "the control socket of sockd.service (/run/sockd-INSTANCE/sockd.sock for an instance)"},
	}
)

// shellWords are a command's flags for completion: "--name" for every
// flag, and the ones that take a value.
func shellWords(fs *flag.FlagSet) (all []string, valued map[string]string) {
	valued = map[string]string{}
	if fs == nil {
		return nil, valued
	}
	fs.VisitAll(func(f *flag.Flag) {
		all = append(all, "--"+f.Name)
		if !isBool(f) {
			arg, _ := flag.UnquoteUsage(f)
			valued["--"+f.Name] = arg
		}
	})
	return all, valued
}

func writeBash(w io.Writer, p manPage) {
	var names []string
	for _, c := range p.Commands {
		names = append(names, c.Name)
	}
	for _, n := range []string{"man", "help"} {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	fmt.Fprintf(w, "# bash completion for sockd (sockd %s), generated by \"sockd man bash\" from the flag definitions; do not edit.\n", p.Version)
	fmt.Fprintln(w, "_sockd() {")
	fmt.Fprintln(w, `	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} flags="" paths="" values="" i`)
	fmt.Fprintf(w, "\tif ((COMP_CWORD == 1)); then\n\t\tCOMPREPLY=($(compgen -W %q -- \"$cur\"))\n\t\treturn\n\tfi\n", strings.Join(names, " "))
	fmt.Fprintln(w, "\tcase ${COMP_WORDS[1]} in")
	for _, c := range p.Commands {
		all, valued := shellWords(c.Flags)
		if len(all) == 0 {
			continue
		}
		var paths, values []string
		for _, f := range all {
			if arg, ok := valued[f]; ok {
				values = append(values, f)
				if arg == "path" {
					paths = append(paths, f)
				}
			}
		}
		fmt.Fprintf(w, "\t%s) flags=%q values=%q paths=%q ;;\n", c.Name, strings.Join(all, " "), strings.Join(values, " "), strings.Join(paths, " "))
	}
	fmt.Fprintln(w, "\tesac")
	fmt.Fprintln(w, `	if [[ ${COMP_WORDS[1]} == run ]]; then
		for ((i = 2; i < COMP_CWORD; i++)); do
			if [[ ${COMP_WORDS[i]} == -- ]]; then # the worker command and its arguments
				if ((i + 1 == COMP_CWORD)); then COMPREPLY=($(compgen -c -- "$cur")); else COMPREPLY=($(compgen -f -- "$cur")); fi
				return
			fi
		done
	fi
	if [[ " $paths " == *" $prev "* ]]; then
		COMPREPLY=($(compgen -f -- "$cur"))
		return
	fi
	if [[ " $values " == *" $prev "* ]]; then
		return # a value: nothing to offer
	fi
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$flags" -- "$cur"))
	fi
}
complete -F _sockd sockd`)
}

// zshQuote escapes s for the description of an _arguments spec inside
// single quotes.
func zshQuote(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return strings.NewReplacer(`'`, `'\''`, `[`, `\[`, `]`, `\]`, `:`, `\:`, `\`, `\\`).Replace(s)
}

func writeZsh(w io.Writer, p manPage) {
	fmt.Fprintln(w, "#compdef sockd")
	fmt.Fprintf(w, "# zsh completion for sockd (sockd %s), generated by \"sockd man zsh\" from the flag definitions; do not edit.\n", p.Version)
	fmt.Fprintln(w, "_sockd() {\n\tlocal -a commands\n\tcommands=(")
	for _, c := range p.Commands {
		fmt.Fprintf(w, "\t\t'%s:%s'\n", c.Name, zshQuote(c.Summary))
	}
	fmt.Fprintln(w, "\t)\n\tif ((CURRENT == 2)); then\n\t\t_describe 'command' commands\n\t\treturn\n\tfi\n\tlocal cmd=$words[2]\n\tshift words\n\t((CURRENT--))\n\tcase $cmd in")
	for _, c := range p.Commands {
		if c.Flags == nil {
			continue
		}
		fmt.Fprintf(w, "\t%s)\n\t\t_arguments -s \\\n", c.Name)
		c.Flags.VisitAll(func(f *flag.Flag) {
			arg, usage := flag.UnquoteUsage(f)
			switch {
			case isBool(f):
				fmt.Fprintf(w, "\t\t\t'--%s[%s]' \\\n", f.Name, zshQuote(usage))
			case arg == "path":
				fmt.Fprintf(w, "\t\t\t'--%s=[%s]:%s:_files' \\\n", f.Name, zshQuote(usage), zshQuote(arg))
			default:
				fmt.Fprintf(w, "\t\t\t'--%s=[%s]:%s: ' \\\n", f.Name, zshQuote(usage), zshQuote(arg))
			}
		})
		if c.Name == "run" {
			fmt.Fprintln(w, "\t\t\t'*::worker command:_normal'")
		} else {
			fmt.Fprintln(w, "\t\t\t'*: :'")
		}
		fmt.Fprintln(w, "\t\t;;")
	}
	fmt.Fprintln(w, "\tesac\n}\n_sockd \"$@\"")
}

// synopsis is the command's own usage line where it has one (it names
// every flag group), else its line in helpText.
func (c manCmd) synopsis() string {
	if c.Usage != "" {
		return c.Usage
	}
	return c.Synopsis
}

// writeMarkdown writes the table of sockd run's settings that
// docs/reference.md carries (a test checks they are the same).
func writeMarkdown(w io.Writer) {
	fmt.Fprintln(w, "| flag | variable | default | what it does |")
	fmt.Fprintln(w, "| --- | --- | --- | --- |")
	cell := strings.NewReplacer("|", `\|`, "\n", " ")
	for _, s := range config.Settings() {
		flag := "--" + s.Name
		if s.Arg != "" {
			flag += " " + s.Arg
		}
		def := s.Default
		if def != "" {
			def = "`" + def + "`"
		}
		fmt.Fprintf(w, "| `%s` | `%s` | %s | %s |\n", cell.Replace(flag), s.Var(), def, cell.Replace(s.Help))
	}
}
