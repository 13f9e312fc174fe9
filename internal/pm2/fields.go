package pm2

import (
	"sort"
	"strings"
)

// How sockd treats a field of PM2's app schema (lib/API/schema.json).
type treatment int

const (
	// mapped: read by resolve and turned into a setting or the command.
	mapped treatment = iota
	// ignored: a PM2 feature sockd does not have or does its own way;
	// named in the app's one warning line unless set to PM2's default.
	ignored
)

type field struct {
	treat treatment
	// aliases PM2 accepts besides the name and its camelCase form, in
	// the order PM2 tries them.
	aliases []string
	// dflt is PM2's default: an ignored field set to it changes nothing
	// under PM2 either, so it is not worth a warning. nil: none.
	dflt any
	// note, for ignored fields, says what sockd does instead.
	note string
}

// fields is PM2's app schema as sockd sees it. PM2 drops unknown fields
// silently; sockd names them (a typo such as wait_redy would otherwise go
// unnoticed under both).
var fields = map[string]field{
	// What sockd maps.
	"script":                {treat: mapped, aliases: []string{"exec"}},
	"name":                  {treat: mapped},
	"cwd":                   {treat: mapped},
	"args":                  {treat: mapped},
	"exec_interpreter":      {treat: mapped, aliases: []string{"interpreter"}},
	"node_args":             {treat: mapped, aliases: []string{"interpreter_args", "interpreterArgs"}},
	"instances":             {treat: mapped},
	"exec_mode":             {treat: mapped},
	"env":                   {treat: mapped},
	"port":                  {treat: mapped},
	"wait_ready":            {treat: mapped},
	"listen_timeout":        {treat: mapped},
	"kill_timeout":          {treat: mapped},
	"max_memory_restart":    {treat: mapped},
	"min_uptime":            {treat: mapped},
	"max_restarts":          {treat: mapped},
	"cron_restart":          {treat: mapped, aliases: []string{"cron"}},
	"instance_var":          {treat: mapped},
	"uid":                   {treat: mapped, aliases: []string{"user"}},
	"gid":                   {treat: mapped},
	"append_env_to_name":    {treat: mapped},
	"execute_command":       {treat: mapped},
	"autorestart":           {treat: mapped},
	"stop_exit_codes":       {treat: mapped},
	"shutdown_with_message": {treat: mapped},
	"increment_var":         {treat: mapped},

	// What sockd does not do, or does its own way.
	"watch":                      {treat: ignored, dflt: false, note: "no file watching: reload with systemctl reload"},
	"ignore_watch":               {treat: ignored},
	"watch_options":              {treat: ignored},
	"watch_delay":                {treat: ignored},
	"out_file":                   {treat: ignored, aliases: []string{"out", "output", "out_log"}, note: "output goes to the journal"},
	"error_file":                 {treat: ignored, aliases: []string{"error", "err", "err_file", "err_log"}},
	"log_file":                   {treat: ignored, aliases: []string{"log"}},
	"merge_logs":                 {treat: ignored, aliases: []string{"combine_logs"}},
	"log_date_format":            {treat: ignored},
	"log_type":                   {treat: ignored},
	"time":                       {treat: ignored, dflt: false},
	"disable_logs":               {treat: ignored, dflt: false},
	"pid_file":                   {treat: ignored, aliases: []string{"pid"}},
	"restart_delay":              {treat: ignored, dflt: 0.0, note: "sockd backs off on its own (100ms doubling to 30s)"},
	"exp_backoff_restart_delay":  {treat: ignored, dflt: 0.0},
	"source_map_support":         {treat: ignored, dflt: true},
	"disable_source_map_support": {treat: ignored, dflt: false},
	"filter_env":                 {treat: ignored, dflt: false},
	"autostart":                  {treat: ignored, dflt: true},
	"treekill":                   {treat: ignored, dflt: true, note: "sockd ends a worker with everything it started"},
	"vizion":                     {treat: ignored, dflt: true},
	"post_update":                {treat: ignored},
	"pmx":                        {treat: ignored, dflt: true},
	"automation":                 {treat: ignored, dflt: true},
	"trace":                      {treat: ignored, dflt: false},
	"disable_trace":              {treat: ignored, dflt: true},
	"v8":                         {treat: ignored, dflt: false},
	"event_loop_inspector":       {treat: ignored, dflt: false},
	"deep_monitoring":            {treat: ignored, dflt: false},
	"io":                         {treat: ignored},
	"namespace":                  {treat: ignored, dflt: "default"},
	"name_prefix":                {treat: ignored},
	"install_url":                {treat: ignored},
	"force":                      {treat: ignored, dflt: false},
	"windowsHide":                {treat: ignored, dflt: true},
	"kill_retry_time":            {treat: ignored, dflt: 100.0},
	"username":                   {treat: ignored},
	"write":                      {treat: ignored},
}

// Top-level keys of an ecosystem file besides the apps.
var topLevel = map[string]bool{"apps": true, "pm2": true, "deploy": true, "static": true}

// camel is PM2's automatic alias of a field: snake_case to camelCase,
// where PM2 leaves one-letter parts lower case.
func camel(k string) string {
	parts := strings.Split(k, "_")
	for i := 1; i < len(parts); i++ {
		if len(parts[i]) > 1 {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
	}
	return strings.Join(parts, "")
}

// canonical maps every spelling PM2 accepts to the field's name.
var canonical = func() map[string]string {
	m := map[string]string{}
	for k, f := range fields {
		m[k] = k
		m[camel(k)] = k
		for _, a := range f.aliases {
			m[a] = k
		}
	}
	// PM2's verifyConfs turns these into script before validating.
	m["cmd"], m["command"] = "script", "script"
	return m
}()

// spellings lists the ways PM2 accepts to write field k, in the order it
// takes the first that is set: the name, then its aliases (the last listed
// in the schema first), then the camelCase form.
func spellings(k string) []string {
	f := fields[k]
	out := []string{k}
	if k == "script" {
		// verifyConfs copies cmd, then command, to script first.
		out = append(out, "cmd", "command")
	}
	for i := len(f.aliases) - 1; i >= 0; i-- {
		out = append(out, f.aliases[i])
	}
	if c := camel(k); c != k {
		out = append(out, c)
	}
	return out
}

// isEnvKey says whether k is an env_NAME set (PM2's ^env_\S*$).
func isEnvKey(k string) bool {
	name, ok := strings.CutPrefix(k, "env_")
	return ok && !strings.ContainsFunc(name, jsSpace)
}

// classify sorts the keys of an app object: the fields sockd ignores that
// are set to something other than PM2's default, and the keys PM2 does not
// know at all.
func classify(obj map[string]any) (ignoredSet, unknown []string) {
	seen := map[string]bool{}
	for k, v := range obj {
		if k == "env" || isEnvKey(k) {
			continue
		}
		c, ok := canonical[k]
		if !ok {
			unknown = append(unknown, k)
			continue
		}
		f := fields[c]
		if f.treat != ignored || seen[c] || (f.dflt != nil && sameValue(v, f.dflt)) {
			continue
		}
		seen[c] = true
		ignoredSet = append(ignoredSet, c)
	}
	sort.Strings(ignoredSet)
	sort.Strings(unknown)
	return ignoredSet, unknown
}

func sameValue(v, dflt any) bool {
	switch d := dflt.(type) {
	case bool:
		b, ok := v.(bool)
		return ok && b == d
	case string:
		s, ok := v.(string)
		return ok && s == d
	case float64:
		f, ok := toFloat(v)
		return ok && f == d
	}
	return false
}
