// Package pm2 reads PM2 ecosystem files and turns their apps into sockd
// settings and systemd units, so that PM2 users move to sockd without
// rewriting anything.
//
// The format is PM2's "application declaration"
// (https://pm2.keymetrics.io/docs/usage/application-declaration/); what
// this package does was checked against PM2's own code (lib/API.js
// _startJson, lib/Common.js prepareAppConf / verifyConfs /
// mergeEnvironmentVariables / resolveInterpreter, lib/tools/Config.js,
// lib/API/schema.json, lib/God.js), version 7. The units it writes are
// sockd's templates units/sockd@.service and sockd@.socket; the
// environment file follows systemd.exec(5), EnvironmentFile=.
//
// # Reading
//
// Load reads the file as `pm2 start FILE` does: a .js, .cjs or .mjs file
// is evaluated by the machine's node (require(), as PM2; an ES module's
// default export), a .json file is parsed by Go (or, when it is not strict
// JSON, evaluated as PM2 evaluates it). The file exports {apps: [...]}, an
// array of apps, or one app. node runs as a child process with a deadline
// (Options.Timeout), bounded output, its own process group (killed when it
// is done), and no descriptor of sockd's: stray inherited descriptors are
// closed before the file runs; under sockd's reaper (Options.Reaper) it is
// registered so that the reaper leaves it alone. Every error is a *Error
// on one line, whose
// Kind says what went wrong (ErrSyntax with node's FILE:LINE, ErrNoApps,
// ErrUnknownApp, ErrAppRequired, ErrNodeMissing, ErrTimeout, ErrInvalid):
// a command prints it and exits 2. Load is pure: called again on a reload,
// it reads the file again and gives the same answer for the same file.
//
// # Resolving
//
// (*File).App resolves one app as `pm2 start FILE --only NAME --env ENV`
// would: script against cwd (else PATH), the interpreter by the script's
// extension (node for .js and for text PM2 does not recognise, none for a
// binary), args and node_args split as PM2 splits a string, cwd against
// Options.Dir (by default the file's directory: PM2 uses the directory
// pm2 runs in, which is where its users run it), env merged with
// env_ENV, the exec mode chosen. What sockd does not do is named in one
// warning line (App.Warning); what would surprise if it were dropped
// (autorestart: false, fork mode with several instances on one port,
// shutdown_with_message, increment_var, a cron_restart with no fixed
// period, a missing script) is an error.
//
// # Mapping
//
// (*App).Settings maps the app to sockd's SOCKD_<FLAG> settings (its doc
// has the table) and Getenv merges them into sockd's flag parsing: flags
// on the command line win over the file, the file over SOCKD_* variables
// of the environment. Generate writes one sockd@APP instance per app:
// /etc/sockd/APP.env, a sockd@APP.socket drop-in for an app with a port,
// and a sockd@APP.service drop-in where the app needs its user or a home
// directory.
package pm2
