package pm2

import (
	"errors"
	"fmt"
	"strings"
)

// The kinds of *Error. Every one is a bad ecosystem file or a bad choice
// of app or env, so a command reports it on one line and exits 2; test
// with errors.Is(err, pm2.ErrSyntax) and so on.
var (
	// ErrRead: the file cannot be read, or its extension is not one PM2
	// reads (.js, .cjs, .mjs, .json).
	ErrRead = errors.New("cannot read ecosystem file")
	// ErrSyntax: node (or the JSON parser) rejected the file, or the file
	// threw while it was evaluated. The message carries node's file:line.
	ErrSyntax = errors.New("ecosystem file does not evaluate")
	// ErrNoApps: the file declares no app.
	ErrNoApps = errors.New("no apps")
	// ErrUnknownApp: App was asked for a name the file does not declare.
	ErrUnknownApp = errors.New("unknown app")
	// ErrAppRequired: the file declares several apps and none was chosen.
	ErrAppRequired = errors.New("several apps")
	// ErrNodeMissing: a .js file needs node and there is none.
	ErrNodeMissing = errors.New("node not found")
	// ErrTimeout: evaluating the file took longer than Options.Timeout.
	ErrTimeout = errors.New("evaluation timed out")
	// ErrInvalid: a field has a value PM2 would refuse, or one sockd
	// cannot honour and whose loss would surprise (autorestart: false,
	// exec_mode fork with several instances on one port, a missing
	// script, …).
	ErrInvalid = errors.New("invalid app")
	// ErrExists: Generate found a file that differs from what it would
	// write, and Overwrite was not set.
	ErrExists = errors.New("file exists and differs")
)

// Error is every error Load, (*File).App, Settings and Generate return for
// bad input (a context's cancellation is returned as it is). Its message is
// a single line: FILE: [app "NAME": ]what is wrong.
type Error struct {
	Kind error  // one of the Err* values above
	File string // the ecosystem file, as given to Load
	App  string // the app concerned, if any
	Msg  string // what is wrong, one line
	Err  error  // the underlying cause, if any
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	if e.App != "" {
		fmt.Fprintf(&b, "app %s: ", quote(e.App))
	}
	b.WriteString(e.Msg)
	return oneLine(b.String())
}

// Unwrap returns the kind and the cause, so errors.Is works for both.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

func newErr(kind error, file, app, format string, a ...any) *Error {
	return &Error{Kind: kind, File: file, App: app, Msg: fmt.Sprintf(format, a...)}
}

// quote quotes a string from the file for a message: strconv-style, so a
// name holding a newline or a control character cannot break the line.
func quote(s string) string { return fmt.Sprintf("%q", s) }

// oneLine makes sure a message is a single line whatever it quotes.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.Join(strings.Fields(s), " ")
}

// quoteList quotes and joins names for a message.
func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = quote(n)
	}
	return strings.Join(q, ", ")
}
