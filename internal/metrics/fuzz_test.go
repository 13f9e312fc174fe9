package metrics

import (
	"bytes"
	"strings"
	"testing"
)

// A worker's exposition, whatever it says: every sample sockd passes on
// parses again to the same name, labels (the worker's and sockd's) and
// value; lines it cannot read are dropped, never passed on broken.
func FuzzWorkerExposition(f *testing.F) {
	for _, s := range []string{"# TYPE a counter\na_total{x=\"1\"} 2\n", `m{l="a\"b\\c\nd",k="}{,"} 1 123`, "x 1\ny{", "# HELP h\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\n", "NaN NaN", "a{=\"x\"} 1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		fs := newFamilies()
		fs.add(strings.NewReader(text), lbl("slot", "0", "generation", "1"))
		var out bytes.Buffer
		fs.write(&out, false)
		for _, line := range strings.Split(out.String(), "\n") {
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			name, labels, rest, err := parseSample(line)
			if err != nil {
				t.Fatalf("sockd wrote %q, which does not parse: %v (from %q)", line, err, text)
			}
			if len(labels) < 2 || labels[0] != [2]string{"slot", "0"} || labels[1] != [2]string{"generation", "1"} {
				t.Fatalf("%q lost the worker's labels", line)
			}
			if again := formatSample(name, labels, rest); again != line {
				t.Fatalf("%q formats back as %q", line, again)
			}
		}
	})
}
