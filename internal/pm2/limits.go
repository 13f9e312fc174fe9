package pm2

import (
	"strconv"
	"strings"
	"time"
)

func (a *App) readLimits(r *reader) {
	a.WaitReady, _ = r.boolean("wait_ready")
	a.ListenTimeout = r.millis("listen_timeout")
	a.KillTimeout = r.millis("kill_timeout")
	if v, ok := get(r.obj, "max_memory_restart"); ok {
		a.MaxMemory = readSize(r, v)
	}
	if v, ok := get(r.obj, "min_uptime"); ok {
		a.MinUptime = readSTime(r, v)
	}
	if f, ok := r.num("max_restarts"); ok {
		if f < 0 || f > 1e9 {
			r.fail("max_restarts %s: want 0 or more", jsNumber(f))
		}
		a.MaxRestarts = int(f)
	}
}

// readSize reads max_memory_restart: bytes, or "NUMBER[K|M|G]" (powers
// of 1024), as PM2's schema says.
func readSize(r *reader, v any) int64 {
	if f, ok := toFloat(v); ok {
		if f < 0 || f > 1<<62 {
			r.fail("max_memory_restart %s: want bytes, or a size like 512M", jsNumber(f))
		}
		return int64(f)
	}
	s, _ := v.(string)
	m := sizeRE.FindStringSubmatch(s)
	n, err := strconv.ParseInt(safeIndex(m, 1), 10, 64)
	if m == nil || err != nil || n > 1<<32 {
		r.fail("max_memory_restart %s: want bytes, or NUMBER with K, M or G, like 512M", jsonText(v))
		return 0
	}
	return n << map[string]int{"": 0, "K": 10, "M": 20, "G": 30}[m[2]]
}

// readSTime reads min_uptime: milliseconds, or "NUMBER[h|m|s]"; PM2 wants
// at least 100 ms.
func readSTime(r *reader, v any) time.Duration {
	if f, ok := toFloat(v); ok {
		if f < 100 || f > 1e12 {
			r.fail("min_uptime %s: want 100 milliseconds or more", jsNumber(f))
			return 0
		}
		return time.Duration(f * float64(time.Millisecond))
	}
	s, _ := v.(string)
	m := stimeRE.FindStringSubmatch(s)
	n, err := strconv.ParseInt(safeIndex(m, 1), 10, 64)
	// Numbers without a unit were read above; what is left has one.
	unit := map[string]time.Duration{"h": time.Hour, "m": time.Minute, "s": time.Second}[safeIndex(m, 2)]
	if m == nil || err != nil || unit == 0 || n > int64(1e12*time.Millisecond/unit) {
		r.fail("min_uptime %s: want milliseconds, or NUMBER with h, m or s, like 2s", jsonText(v))
		return 0
	}
	return time.Duration(n) * unit
}

func safeIndex(m []string, i int) string {
	if i < len(m) {
		return m[i]
	}
	return ""
}

// cron reads cron_restart: "" when unset or 0 (PM2's "disable").
func (r *reader) cron() string {
	v, ok := get(r.obj, "cron_restart")
	if !ok {
		return ""
	}
	s, isScalar := jsString(v)
	if _, isBool := v.(bool); !isScalar || isBool {
		r.typeErr("cron_restart", v, "a cron pattern")
		return ""
	}
	if s = strings.TrimSpace(s); s == "0" || s == "" {
		return ""
	}
	return s
}
