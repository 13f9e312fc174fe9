package pm2

import (
	"encoding/json"
	"math"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestSplitArgs: PM2's splitting of a string of args (lib/tools/Config.js),
// case by case.
func TestSplitArgs(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"   ", nil},
		{"--port 3000 --verbose", []string{"--port", "3000", "--verbose"}},
		{`"two words" 'three more words'`, []string{"two words", "three more words"}},
		{`--title="My app" --x='a b'`, []string{`--title="My app"`, `--x='a b'`}}, // KEY="…" keeps its quotes
		{`--title=My`, []string{"--title=My"}},
		{`a="b c"d`, []string{`a="b c"`, "d"}},
		{`"a"b`, []string{"a", "b"}},
		{`"unclosed word`, []string{`"unclosed`, "word"}},
		{`it's`, []string{"it's"}},
		{`"" '' " " x`, []string{"x"}}, // empty and blank words are dropped
		{`"`, nil},
		{`back\ slash`, []string{`back\`, "slash"}}, // no escapes
		{"tab\tnew\nline\u00a0nbsp\u2003em", []string{"tab", "new", "line", "nbsp", "em"}},
		{"x\u0085y", []string{"x\u0085y"}}, // NEL is not a space to JavaScript
		{`=a "b=c" ="d e"`, []string{"=a", "b=c", `="d`, `e"`}},
		{`k=" multi` + "\n" + `line "`, []string{"k=\" multi\nline \""}},
	} {
		if got := SplitArgs(c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("SplitArgs(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestCronPeriod(t *testing.T) {
	for expr, want := range map[string]time.Duration{
		"* * * * *":         time.Minute,
		"*/5 * * * *":       5 * time.Minute,
		"*/30 * * * *":      30 * time.Minute,
		"0 * * * *":         time.Hour,
		"15 */2 * * *":      2 * time.Hour,
		"0 */6 * * *":       6 * time.Hour,
		"0 3 * * *":         24 * time.Hour,
		"30 4 ? * *":        24 * time.Hour,
		"0 0 * * 0":         7 * 24 * time.Hour,
		"0 0 * * 7":         7 * 24 * time.Hour,
		"0 0 3 * * *":       24 * time.Hour, // seconds first
		"*/10 * * * * *":    10 * time.Second,
		"5/15 * * * *":      15 * time.Minute,
		"@daily":            24 * time.Hour,
		"@HOURLY":           time.Hour,
		"@weekly":           7 * 24 * time.Hour,
		"0 0 1 * *":         0, // monthly
		"0 3 * * 1-5":       0,
		"0,30 * * * *":      0,
		"*/7 * * * *":       0, // 7 does not divide 60: the gap at the hour is 4
		"0 */5 * * *":       0,
		"0 * * * 1":         0, // every hour on Mondays
		"0 3 * jan *":       0,
		"0 25 * * *":        0,
		"60 * * * *":        0,
		"@monthly":          0,
		"@yearly":           0,
		"* * *":             0,
		"0 0 0 0 0 0 0":     0,
		"20/15 * * * *":     0,
		"0 3 * * * extra x": 0,
	} {
		got, ok := period(expr)
		if ok != (want != 0) || got != want {
			t.Errorf("period(%q) = %s, %v; want %s", expr, got, ok, want)
		}
	}
	if got := AgeSpec(24 * time.Hour); got != "24h+-2h24m" {
		t.Errorf("AgeSpec(24h) = %s", got)
	}
	if got := AgeSpec(90 * time.Second); got != "1m30s+-9s" {
		t.Errorf("AgeSpec(90s) = %s", got)
	}
}

func TestParseWorkers(t *testing.T) {
	for _, c := range []struct {
		in   string
		cpus int
		want int
		err  bool
	}{
		{"4", 8, 4, false}, {"max", 6, 6, false}, {"max-1", 6, 5, false}, {"max-2", 2, 1, false}, {"max-0", 3, 3, false},
		{"max", 0, 1, false}, {" 3 ", 1, 3, false},
		{"0", 4, 0, true}, {"-1", 4, 0, true}, {"lots", 4, 0, true}, {"max+1", 4, 0, true}, {"max1", 4, 0, true}, {"max-x", 4, 0, true},
	} {
		got, err := ParseWorkers(c.in, c.cpus)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("ParseWorkers(%q, %d) = %d, %v; want %d, error %v", c.in, c.cpus, got, err, c.want, c.err)
		}
	}
}

// TestGetenv: the file's settings win over the environment; flags on the
// command line are the caller's (parseFlags asks getenv only for flags not
// given).
func TestGetenv(t *testing.T) {
	env := map[string]string{"SOCKD_WORKERS": "2", "SOCKD_LOG_LEVEL": "debug"}
	get := Getenv(map[string]string{"SOCKD_WORKERS": "max", "SOCKD_READY": "node-ipc"}, func(k string) string { return env[k] })
	for k, want := range map[string]string{"SOCKD_WORKERS": "max", "SOCKD_READY": "node-ipc", "SOCKD_LOG_LEVEL": "debug", "SOCKD_METRICS": ""} {
		if got := get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

func TestEnviron(t *testing.T) {
	a := &App{Env: map[string]string{"NODE_ENV": "production", "PATH": "/opt/node/bin:/usr/bin"}}
	got := a.Environ([]string{"HOME=/root", "NODE_ENV=development", "PATH=/usr/bin", "LANG=C"})
	want := []string{"HOME=/root", "LANG=C", "NODE_ENV=production", "PATH=/opt/node/bin:/usr/bin"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Environ = %q, want %q", got, want)
	}
}

func TestFmtSize(t *testing.T) {
	for n, want := range map[int64]string{1 << 30: "1G", 3 << 29: "1536M", 300 << 20: "300M", 512 << 10: "512K", 1500: "1500"} {
		if got := fmtSize(n); got != want {
			t.Errorf("fmtSize(%d) = %s, want %s", n, got, want)
		}
	}
}

// TestJSNumber checks jsNumber against node's String(x): an env value or
// an argument that is a number must read the same whether Go parsed the
// file or node evaluated it.
func TestJSNumber(t *testing.T) {
	xs := []float64{0, 1, -1, 3000, 0.1, 0.5, 1.5, -2.25, 1e-6, 1e-7, 1.5e-7, 123456789012, 1e20, 1e21, 1.5e21, 12345678901234567890,
		math.MaxFloat64, math.SmallestNonzeroFloat64, 1 / 3.0, 2e-5, 123.456, 9007199254740993, -1e-10, 5e-324}
	in, _ := json.Marshal(xs)
	out, err := exec.Command(nodePath(t), "-e", `for (const x of JSON.parse(process.argv[1])) console.log(String(x))`, string(in)).Output()
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i, x := range xs {
		if got := jsNumber(x); got != want[i] {
			t.Errorf("jsNumber(%v) = %s, node says %s", x, got, want[i])
		}
	}
}
