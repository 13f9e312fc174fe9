package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/sockd/sockd/internal/config"
	"github.com/sockd/sockd/internal/pm2"
)

const pm2Help = "Turns every app of a PM2 ecosystem file into what systemd runs: one sockd@APP instance each,\n" +
	"with /etc/sockd/APP.env (the app's settings and variables), a sockd@APP.socket drop-in with its\n" +
	"port (ListenStream=) and, where needed, a sockd@APP.service drop-in (User=, ProtectHome=). An app\n" +
	"without a port (a queue consumer) runs with no listener. Files that exist and differ are left\n" +
	"alone unless --force. Then: systemctl daemon-reload; systemctl enable --now the units it names.\n"

// pm2Command is `sockd pm2 FILE`.
func pm2Command(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sockd pm2", flag.ContinueOnError)
	env := fs.String("env", "", "merge each app's env_`NAME` over its env, as pm2 start --env NAME")
	root := fs.String("root", "", "write below `DIR` instead of / (to look before installing)")
	force := fs.Bool("force", false, "replace files that exist and differ")
	only := fs.String("only", "", "only these `APPS` (comma-separated names)")
	fs.Usage = usageFunc(fs, "sockd pm2 [--env NAME] [--root DIR] [--force] [--only APPS] FILE", pm2Help)
	file, args := scaleArg(args, "env", "root", "only") // the first argument that is not a flag
	if err := parseFlags(fs, args, getenv, stdout); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if file == "" || fs.NArg() > 0 {
		return usagef("sockd pm2: want one ecosystem file (see sockd pm2 --help)")
	}
	f, err := pm2.Load(context.Background(), pm2.Options{Path: file, EnvName: *env})
	if err != nil {
		return config.Usagef("%v", err)
	}
	o := pm2.GenerateOptions{Root: *root, Overwrite: *force}
	if *only != "" {
		o.Apps = strings.Split(*only, ",")
	}
	g, err := pm2.Generate(f, o)
	if err != nil {
		var pe *pm2.Error
		if errors.As(err, &pe) {
			return config.Usagef("%v", err)
		}
		return err
	}
	for _, w := range g.Warnings {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	for _, o := range g.Files {
		// The file as written: below --root when it is given.
		fmt.Fprintf(stdout, "%-9s %s\n", o.Status, filepath.Join(cmp.Or(*root, "/"), o.Path))
	}
	if len(g.Units) > 0 && *root == "" {
		fmt.Fprintf(stdout, "\nNow:\n  systemctl daemon-reload\n  systemctl enable --now %s\n", strings.Join(g.Units, " "))
	} else if len(g.Units) > 0 {
		fmt.Fprintf(stdout, "\nUnits to enable: %s\n", strings.Join(g.Units, " "))
	}
	return nil
}
