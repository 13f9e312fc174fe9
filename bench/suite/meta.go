package suite

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// machineFacts describes the machine, the tools and the run.
func machineFacts(cfg Config) Meta {
	m := Meta{Date: time.Now().UTC().Format("2006-01-02 15:04 MST"), Mode: string(cfg.Mode), Cores: runtime.NumCPU(), Command: cfg.Command}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				m.CPU = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kb)
		m.MemGiB = float64(kb) / (1 << 20)
	}
	m.Kernel = firstLine("uname", "-sr")
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`)
			}
		}
	}
	m.Versions = versions(cfg)
	m.Commit = commit(cfg.Root)
	for _, k := range []string{"net.core.somaxconn", "net.ipv4.tcp_tw_reuse", "net.ipv4.ip_local_port_range"} {
		b, _ := os.ReadFile("/proc/sys/" + strings.ReplaceAll(k, ".", "/"))
		m.Sysctl = append(m.Sysctl, k+" = "+strings.Join(strings.Fields(string(b)), " "))
	}
	return m
}

// firstLine is the first line of what a command prints ("" if name is).
func firstLine(name string, args ...string) string {
	if name == "" {
		return ""
	}
	b, _ := exec.Command(name, args...).CombinedOutput()
	return strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
}

// versions of the tools the peers use.
func versions(cfg Config) map[string]string {
	t := cfg.Tools
	v := map[string]string{"go": runtime.Version(), "sockd": firstLine(t.Sockd, "version")}
	if t.Node != "" {
		v["node"] = firstLine(t.Node, "--version")
	}
	if t.PM2 != "" {
		if b, err := os.ReadFile(filepath.Join(cfg.Root, "bench/peers/node/node_modules/pm2/package.json")); err == nil {
			var pj struct{ Version string }
			json.Unmarshal(b, &pj)
			v["pm2"] = pj.Version
		}
	}
	if t.Gunicorn != "" {
		v["gunicorn"] = firstLine(t.Gunicorn, "--version")
	}
	if t.Python != "" {
		v["python"] = firstLine(t.Python, "--version")
	}
	if t.Nginx != "" {
		v["nginx"] = firstLine(t.Nginx, "-v")
	}
	if t.Tableflip != "" {
		v["tableflip"] = "v1.2.3"
	}
	return v
}

// commit is the repository's short commit, noting uncommitted changes.
func commit(root string) string {
	b, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	c := strings.TrimSpace(string(b))
	if st, _ := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); len(st) > 0 {
		c += " (with uncommitted changes)"
	}
	return c
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return ""
}
