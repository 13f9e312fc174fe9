package metrics

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The Prometheus text exposition format, version 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/), as far
// as sockd needs it to merge its workers' metrics into its own: every
// sample of a worker gets the worker's slot and generation as labels, and
// the samples of one metric family from every worker are written
// together, under one HELP and one TYPE, as the format requires.

// family is one metric family: its metadata and its samples.
type family struct {
	name, help, typ string
	samples         []sample
}

type sample struct {
	name   string
	labels [][2]string
	rest   string // value [timestamp]
}

// families collects families from several sources, in order of first
// appearance.
type families struct {
	byName map[string]*family
	order  []string
}

func newFamilies() *families { return &families{byName: map[string]*family{}} }

func (fs *families) get(name string) *family {
	f := fs.byName[name]
	if f == nil {
		f = &family{name: name}
		fs.byName[name] = f
		fs.order = append(fs.order, name)
	}
	return f
}

// maxLine bounds one line of a worker's output.
const maxLine = 64 << 10

// add parses one worker's exposition from r and adds its samples with the
// labels extra (a sorted list of name="value" pairs) inserted. A label of
// the worker's own with the same name as one of extra is kept as
// exported_NAME, as Prometheus does for a target's clashing labels. It
// returns how many samples it took and the first line it could not read
// (a sample it cannot parse is dropped, never passed on broken).
func (fs *families) add(r io.Reader, extra [][2]string) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxLine)
	var cur *family
	var bad error
	n := 0
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
			continue
		case strings.HasPrefix(line, "#"):
			f := strings.Fields(line)
			if len(f) >= 3 && (f[1] == "HELP" || f[1] == "TYPE") && validName(f[2]) {
				fam := fs.get(f[2])
				rest := strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(line[1:], " "+f[1]+" "), f[1]+" "))
				rest = strings.TrimSpace(strings.TrimPrefix(rest, f[2]))
				if f[1] == "HELP" && fam.help == "" && utf8.ValidString(rest) {
					fam.help = rest
				}
				if f[1] == "TYPE" && fam.typ == "" && validType(rest) {
					fam.typ = rest
				}
				cur = fam
			}
			continue
		}
		name, labels, rest, err := parseSample(line)
		if err != nil {
			if bad == nil {
				bad = fmt.Errorf("%w: %.80q", err, line)
			}
			continue
		}
		fam := cur
		if fam == nil || !belongs(name, fam) {
			fam = fs.get(name)
		}
		fam.samples = append(fam.samples, sample{name, relabel(labels, extra), rest})
		n++
	}
	if err := sc.Err(); err != nil && bad == nil {
		bad = err
	}
	return n, bad
}

// merge adds the families of other to fs (after fs's own samples).
func (fs *families) merge(other *families) {
	for _, name := range other.order {
		o := other.byName[name]
		f := fs.get(name)
		if f.help == "" {
			f.help = o.help
		}
		if f.typ == "" {
			f.typ = o.typ
		}
		f.samples = append(f.samples, o.samples...)
	}
}

// belongs reports whether sample name is part of family f (a histogram's
// _bucket, _sum and _count, a summary's _sum and _count, _created).
func belongs(name string, f *family) bool {
	if name == f.name {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count", "_created", "_total"} {
		if name == f.name+suffix {
			return true
		}
	}
	return false
}

// write writes every family, sorted by name, in the text format, or in
// OpenMetrics (https://github.com/OpenObservability/OpenMetrics), which
// differs where sockd's output touches it: a counter family's name has no
// _total (its samples do), a family without a type is "unknown", an empty
// HELP is left out, and "# EOF" ends the exposition.
//
// In OpenMetrics, a family whose name is a sample name of a counter,
// histogram or summary (the gauge X_created that prometheus_client writes
// beside a counter X_total in the text format) is left out: OpenMetrics
// has those as the family's own samples, and the names would clash.
func (fs *families) write(w io.Writer, openMetrics bool) {
	names := append([]string(nil), fs.order...)
	famName := func(name string) string {
		if f := fs.byName[name]; openMetrics && f.typ == "counter" {
			return strings.TrimSuffix(name, "_total")
		}
		return name
	}
	sort.Slice(names, func(i, j int) bool { return famName(names[i]) < famName(names[j]) })
	taken := map[string]bool{}
	if openMetrics {
		for _, name := range names {
			f := fs.byName[name]
			base := famName(name)
			switch f.typ {
			case "counter":
				taken[base+"_total"], taken[base+"_created"] = true, true
			case "histogram":
				taken[base+"_bucket"], taken[base+"_sum"], taken[base+"_count"], taken[base+"_created"] = true, true, true, true
			case "summary":
				taken[base+"_sum"], taken[base+"_count"], taken[base+"_created"] = true, true, true
			}
		}
	}
	for _, name := range names {
		f := fs.byName[name]
		if len(f.samples) == 0 || taken[name] && f.typ != "counter" {
			continue
		}
		fam, typ := famName(name), f.typ
		if openMetrics && (typ == "" || typ == "untyped") {
			typ = "unknown"
		}
		if f.help != "" {
			fmt.Fprintf(w, "# HELP %s %s\n", fam, f.help)
		}
		if typ != "" {
			fmt.Fprintf(w, "# TYPE %s %s\n", fam, typ)
		}
		for _, s := range f.samples {
			name := s.name
			if openMetrics && typ == "counter" && name == fam {
				name += "_total"
			}
			rest := s.rest
			if openMetrics {
				rest = openMetricsRest(rest)
			}
			io.WriteString(w, formatSample(name, s.labels, rest))
			io.WriteString(w, "\n")
		}
	}
	if openMetrics {
		io.WriteString(w, "# EOF\n")
	}
}

// parseSample splits `name{a="x",b="y"} value [timestamp]` into its name,
// its labels (names and unescaped values) and what follows.
func parseSample(line string) (string, [][2]string, string, error) {
	i := 0
	for i < len(line) && line[i] != '{' && line[i] != ' ' && line[i] != '\t' {
		i++
	}
	name := line[:i]
	if !validName(name) {
		return "", nil, "", fmt.Errorf("bad metric name")
	}
	var labels [][2]string
	if i < len(line) && line[i] == '{' {
		i++
		for {
			for i < len(line) && (line[i] == ' ' || line[i] == ',') {
				i++
			}
			if i < len(line) && line[i] == '}' {
				i++
				break
			}
			j := i
			for j < len(line) && line[j] != '=' {
				j++
			}
			lname := strings.TrimSpace(line[i:j])
			if j+1 >= len(line) || line[j+1] != '"' || !validLabel(lname) {
				return "", nil, "", fmt.Errorf("bad label")
			}
			var v strings.Builder
			k := j + 2
			for ; k < len(line) && line[k] != '"'; k++ {
				if line[k] == '\\' && k+1 < len(line) {
					k++
					switch line[k] {
					case 'n':
						v.WriteByte('\n')
					default:
						v.WriteByte(line[k])
					}
					continue
				}
				v.WriteByte(line[k])
			}
			if k >= len(line) {
				return "", nil, "", fmt.Errorf("unterminated label value")
			}
			if !utf8.ValidString(v.String()) {
				return "", nil, "", fmt.Errorf("label value not UTF-8")
			}
			labels = append(labels, [2]string{lname, v.String()})
			i = k + 1
		}
	}
	f := strings.Fields(line[i:])
	if len(f) < 1 || len(f) > 2 || !validNumber(f[0]) {
		return "", nil, "", fmt.Errorf("bad value")
	}
	if len(f) == 2 && !validTimestamp(f[1]) {
		return "", nil, "", fmt.Errorf("bad timestamp (want milliseconds, an integer)")
	}
	return name, labels, strings.Join(f, " "), nil
}

// relabel puts extra first and renames the sample's own clashing labels.
func relabel(own, extra [][2]string) [][2]string {
	out := append([][2]string(nil), extra...)
	for _, l := range own {
		for _, e := range extra {
			if l[0] == e[0] {
				l[0] = "exported_" + l[0]
				break
			}
		}
		out = append(out, l)
	}
	return out
}

func formatSample(name string, labels [][2]string, rest string) string {
	var b strings.Builder
	b.WriteString(name)
	if len(labels) > 0 {
		b.WriteByte('{')
		for i, l := range labels {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(l[0])
			b.WriteString(`="`)
			b.WriteString(escape(l[1]))
			b.WriteByte('"')
		}
		b.WriteByte('}')
	}
	b.WriteByte(' ')
	b.WriteString(rest)
	return b.String()
}

// labelEscaper escapes a label value (built once: a Replacer builds a
// lookup table that cost about 700 kB per scrape when made per value).
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escape(v string) string {
	if !strings.ContainsAny(v, "\\\"\n") {
		return v
	}
	return labelEscaper.Replace(v)
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r == ':' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func validLabel(s string) bool { return validName(s) && !strings.Contains(s, ":") }

// validNumber accepts what every parser of both formats reads: a decimal
// number (Prometheus's own parser also takes hex and "1_0" forms some
// others refuse), NaN or an infinity.
func validNumber(s string) bool {
	switch s {
	case "NaN", "+Inf", "-Inf", "Inf":
		return true
	}
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	digits := 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		digits++
	}
	if i < len(s) && s[i] == '.' {
		for i++; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			digits++
		}
	}
	if digits == 0 {
		return false
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		exp := 0
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			exp++
		}
		if exp == 0 {
			return false
		}
	}
	if i != len(s) {
		return false
	}
	_, err := strconv.ParseFloat(s, 64) // out of range (1e400) is refused too
	return err == nil
}

// validTimestamp: the text format's timestamp, milliseconds since the
// epoch as an integer.
func validTimestamp(s string) bool {
	ms, err := strconv.ParseInt(s, 10, 64)
	return err == nil && ms != math.MinInt64 // whose seconds openMetricsRest could not negate
}

// validType is a TYPE the text format knows.
func validType(s string) bool {
	switch s {
	case "counter", "gauge", "histogram", "summary", "untyped":
		return true
	}
	return false
}

// openMetricsRest is a sample's value and timestamp as OpenMetrics has
// them: the timestamp in seconds (the text format's is in milliseconds),
// an infinity with its sign.
func openMetricsRest(rest string) string {
	value, ts, _ := strings.Cut(rest, " ")
	if value == "Inf" {
		value = "+Inf"
	}
	if ts == "" {
		return value
	}
	ms, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return value
	}
	sign := ""
	if ms < 0 {
		sign, ms = "-", -ms
	}
	return fmt.Sprintf("%s %s%d.%03d", value, sign, ms/1000, ms%1000)
}
