package cpus

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// A fake cgroup tree: the quota of the process's cgroup or of any
// ancestor bounds the count, rounded up; none leaves the affinity count.
func TestUsableReadsTheQuota(t *testing.T) {
	cases := []struct {
		name     string
		cgroup   string // /proc/self/cgroup
		files    map[string]string
		affinity int
		want     int
	}{
		{"v2 no quota", "0::/a/b\n", map[string]string{"a/b/cpu.max": "max 100000\n"}, 8, 8},
		{"v2 quota 1.5", "0::/a/b\n", map[string]string{"a/b/cpu.max": "150000 100000\n"}, 8, 2},
		{"v2 quota on an ancestor", "0::/a/b\n", map[string]string{"a/cpu.max": "200000 100000\n", "a/b/cpu.max": "max 100000\n"}, 8, 2},
		{"v2 quota above affinity", "0::/a\n", map[string]string{"a/cpu.max": "1600000 100000\n"}, 4, 4},
		{"v2 hybrid mount", "0::/a\n", map[string]string{"unified/a/cpu.max": "100000 100000\n"}, 4, 1},
		{"v1 quota", "4:cpu,cpuacct:/docker/x\n0::/\n", map[string]string{"cpu,cpuacct/docker/x/cpu.cfs_quota_us": "300000\n", "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000\n"}, 16, 3},
		{"v1 unlimited", "4:cpu,cpuacct:/\n", map[string]string{"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 16, 16},
		{"tiny quota is one CPU", "0::/a\n", map[string]string{"a/cpu.max": "1000 100000\n"}, 4, 1},
		{"garbage", "nonsense\n0::/a\n", map[string]string{"a/cpu.max": "lots\n"}, 3, 3},
		{"no cgroup file", "", nil, 2, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			root := filepath.Join(dir, "fs")
			for name, body := range c.files {
				p := filepath.Join(root, name)
				os.MkdirAll(filepath.Dir(p), 0o755)
				os.WriteFile(p, []byte(body), 0o644)
			}
			cg := filepath.Join(dir, "cgroup")
			if c.cgroup != "" {
				os.WriteFile(cg, []byte(c.cgroup), 0o644)
			}
			if got := usable(c.affinity, cg, root); got != c.want {
				t.Fatalf("usable = %d, want %d", got, c.want)
			}
		})
	}
}

// On this machine: never more than the affinity mask, never less than 1.
func TestUsableHere(t *testing.T) {
	if n := Usable(); n < 1 || n > runtime.NumCPU() {
		t.Fatalf("Usable() = %d with %d CPUs in the affinity mask", n, runtime.NumCPU())
	}
}
