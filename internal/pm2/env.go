package pm2

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// readEnv merges the env sets as PM2 does for --env NAME: deploy's
// env_NAME.env, then env (with port as PORT), then env_NAME.
func (a *App) readEnv(r *reader, deploy map[string]any) {
	a.Env, a.settings = map[string]string{}, map[string]string{}
	merge := func(what string, v any) {
		m, ok := v.(map[string]any)
		if !ok {
			r.typeErr(what, v, "an object of variables")
			return
		}
		for k, x := range m {
			s, ok := jsString(x)
			if !ok {
				s = jsonText(x) // PM2 passes objects as JSON
			}
			if !validEnvPair(k, s) {
				r.fail("%s: variable %s: a name holds no '=' and neither holds a NUL byte", what, quote(k))
				return
			}
			if strings.HasPrefix(k, "SOCKD_") {
				a.settings[k] = s
			} else {
				a.Env[k] = s
			}
		}
	}
	if a.EnvName != "" {
		if d, ok := deploy[a.EnvName].(map[string]any); ok {
			if e, ok := d["env"]; ok && e != nil {
				merge("deploy."+a.EnvName+".env", e)
			}
		}
	}
	if e, ok := r.obj["env"]; ok && e != nil {
		merge("env", e)
	}
	if f, ok := r.num("port"); ok && f != 0 {
		a.Env["PORT"] = jsNumber(f)
	}
	if a.EnvName != "" {
		k := "env_" + a.EnvName
		if e, ok := r.obj[k]; ok && e != nil {
			merge(k, e)
		} else {
			a.Notes = append(a.Notes, fmt.Sprintf("no %s, so env alone applies (PM2 warns too)", k))
		}
	}
	if p, ok := a.Env["PORT"]; ok {
		a.port = p
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 || n > 65535 {
			r.fail("PORT %s: want a port number, 1 to 65535 (sockd listens on it for the app)", quote(p))
			return
		}
		a.Port = n
	}
}

// validEnvName says whether s is a variable name every shell and systemd
// accept: letters, digits and _, not starting with a digit.
func validEnvName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for _, c := range []byte(s) {
		if !(c == '_' || (c >= '0' && c <= '9') || (c|0x20 >= 'a' && c|0x20 <= 'z')) {
			return false
		}
	}
	return true
}

// validEnvPair says whether k=v can be put in a process's environment.
func validEnvPair(k, v string) bool {
	return k != "" && !strings.ContainsAny(k, "=\x00") && !strings.Contains(v, "\x00")
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
