package pm2

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// cron_restart has no equivalent in sockd, which has no clock-driven
// restarts. What it has is --worker-max-age D±J: each worker is replaced,
// its replacement first, D (±J at random) after it became ready. PM2
// users set cron_restart to cure slow leaks ("0 3 * * *": every night), so
// a pattern that repeats at a fixed period P maps to a maximum age of P
// with a jitter of P/10, which spreads the replacements instead of
// restarting every worker at the same instant as PM2 does. What is lost is
// the time of day. A pattern with no fixed period (monthly, weekdays only,
// lists, ranges) is an error that says so; at fixed times, a systemd timer
// running `systemctl reload sockd@APP` does what PM2's cron did, without
// downtime.

type cronField struct {
	name  string
	size  int           // values in the field's cycle
	unit  time.Duration // one step of the field
	lo    int           // smallest value
	value string
}

// cronPeriod returns the period of a cron pattern that repeats at one,
// with a note for the app's warning; otherwise it records an error.
func cronPeriod(expr string, r *reader, notes []string) (time.Duration, []string) {
	p, ok := period(expr)
	if !ok {
		r.fail("cron_restart %s: sockd has no cron, only a maximum age per worker (--worker-max-age), so only a pattern with a fixed period maps (*/30 * * * *, 0 */6 * * *, 0 3 * * *, 0 3 * * 1); at fixed times use a systemd timer that runs systemctl reload", quote(expr))
		return 0, notes
	}
	return p, append(notes, fmt.Sprintf("cron_restart %s becomes --worker-max-age %s: each worker is replaced about %s after it was ready, not at fixed times", quote(expr), AgeSpec(p), fmtDuration(p)))
}

// AgeSpec is the --worker-max-age value for a period: P+-P/10 (sockd
// reads D±J and D+-J alike; ASCII is kinder to environment files).
func AgeSpec(p time.Duration) string {
	return fmtDuration(p) + "+-" + fmtDuration(p/10)
}

// period finds the fixed period a cron pattern (5 fields, or 6 with
// seconds first, or a @nickname) repeats at.
func period(expr string) (time.Duration, bool) {
	switch strings.ToLower(expr) {
	case "@hourly":
		return time.Hour, true
	case "@daily", "@midnight":
		return 24 * time.Hour, true
	case "@weekly":
		return 7 * 24 * time.Hour, true
	}
	f := strings.Fields(expr)
	if len(f) == 5 {
		f = append([]string{"0"}, f...)
	}
	if len(f) != 6 {
		return 0, false
	}
	clock := []cronField{
		{"second", 60, time.Second, 0, f[0]},
		{"minute", 60, time.Minute, 0, f[1]},
		{"hour", 24, time.Hour, 0, f[2]},
	}
	dom, month, dow := f[3], f[4], f[5]
	if !anyValue(dom) || !anyValue(month) {
		return 0, false
	}
	for i, c := range clock {
		if _, fixed := fixedValue(c); fixed {
			continue
		}
		// The first field that is not fixed sets the period; every larger
		// one must be "any", and the day of the week too.
		step, ok := stepOf(c)
		if !ok || !anyValue(dow) {
			return 0, false
		}
		for _, larger := range clock[i+1:] {
			if !anyValue(larger.value) {
				return 0, false
			}
		}
		return time.Duration(step) * c.unit, true
	}
	if anyValue(dow) {
		return 24 * time.Hour, true
	}
	if _, ok := fixedValue(cronField{size: 8, value: dow}); ok {
		return 7 * 24 * time.Hour, true
	}
	return 0, false
}

func anyValue(v string) bool { return v == "*" || v == "?" }

// fixedValue reads a field that is a single number in its range.
func fixedValue(c cronField) (int, bool) {
	n, err := strconv.Atoi(c.value)
	return n, err == nil && n >= c.lo && n < c.lo+c.size && !strings.HasPrefix(c.value, "+")
}

// stepOf reads "*" (step 1), "*/N" or "A/N" (A < N) where N divides the
// field's cycle, so the gaps stay equal across the cycle's end.
func stepOf(c cronField) (int, bool) {
	if anyValue(c.value) {
		return 1, true
	}
	start, stepText, ok := strings.Cut(c.value, "/")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(stepText)
	if err != nil || n < 1 || n > c.size || c.size%n != 0 {
		return 0, false
	}
	if !anyValue(start) {
		a, fixed := fixedValue(cronField{size: c.size, lo: c.lo, value: start})
		if !fixed || a >= n {
			return 0, false
		}
	}
	return n, true
}

// fmtDuration writes d without zero units: 24h, 2h24m, 90s as 1m30s.
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
