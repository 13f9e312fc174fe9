// Package cpus counts the CPUs a process may actually use: the ones its
// affinity mask allows (sched_getaffinity(2), cpusets), and no more than
// its cgroup's CPU quota grants — cpu.max in cgroup v2, cpu.cfs_quota_us
// over cpu.cfs_period_us in v1 (a container's --cpus, systemd's
// CPUQuota=), rounded up. This is what a worker pool's default size should
// be, not the host's CPU count.
package cpus

import (
	"bufio"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// Usable is the number of CPUs this process may use, at least 1.
func Usable() int {
	return usable(runtime.NumCPU(), "/proc/self/cgroup", "/sys/fs/cgroup")
}

// usable is Usable with its inputs named: the affinity count (Go's
// runtime.NumCPU reads the mask), the process's cgroup file and the
// cgroup mount root.
func usable(affinity int, cgroupFile, root string) int {
	n := affinity
	if q, ok := quota(cgroupFile, root); ok && q < float64(n) {
		n = int(math.Ceil(q))
	}
	return max(n, 1)
}

// quota is the tightest CPU quota of the process's cgroup and its
// ancestors, in CPUs; false if none is set.
func quota(cgroupFile, root string) (float64, bool) {
	f, err := os.Open(cgroupFile)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	best, found := math.Inf(1), false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		var dirs []string
		switch {
		case parts[0] == "0" && parts[1] == "":
			dirs = []string{root, filepath.Join(root, "unified")}
		case hasController(parts[1], "cpu"):
			dirs = []string{filepath.Join(root, parts[1]), filepath.Join(root, "cpu"), filepath.Join(root, "cpu,cpuacct")}
		default:
			continue
		}
		for _, base := range dirs {
			for p := filepath.Join(base, parts[2]); strings.HasPrefix(p, base); p = filepath.Dir(p) {
				if q, ok := readQuota(p); ok && q < best {
					best, found = q, true
				}
				if p == base {
					break
				}
			}
		}
	}
	return best, found
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// readQuota reads dir's quota: cpu.max ("max 100000" or "50000 100000"),
// or cpu.cfs_quota_us (-1: none) and cpu.cfs_period_us.
func readQuota(dir string) (float64, bool) {
	if b, err := os.ReadFile(filepath.Join(dir, "cpu.max")); err == nil {
		f := strings.Fields(string(b))
		if len(f) == 2 && f[0] != "max" {
			return ratio(f[0], f[1])
		}
		return 0, false
	}
	q, err1 := os.ReadFile(filepath.Join(dir, "cpu.cfs_quota_us"))
	p, err2 := os.ReadFile(filepath.Join(dir, "cpu.cfs_period_us"))
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return ratio(strings.TrimSpace(string(q)), strings.TrimSpace(string(p)))
}

func ratio(quota, period string) (float64, bool) {
	q, err1 := strconv.ParseInt(quota, 10, 64)
	p, err2 := strconv.ParseInt(period, 10, 64)
	if err1 != nil || err2 != nil || q <= 0 || p <= 0 {
		return 0, false
	}
	return float64(q) / float64(p), true
}
