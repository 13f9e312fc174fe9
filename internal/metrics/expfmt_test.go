package metrics

import (
	"bytes"
	"strings"
	"testing"
)

// A worker's exposition, merged with another's: every sample gets the
// worker's labels, a clashing label of the worker's own is kept as
// exported_NAME, values with quotes, commas and braces survive, and each
// family is written once, all its samples together.
func TestMergeWorkers(t *testing.T) {
	one := `# HELP req_total Requests.
# TYPE req_total counter
req_total{path="/a,b",note="say \"hi\" {x}"} 3
req_total{slot="mine"} 1
# TYPE lat_seconds histogram
lat_seconds_bucket{le="0.1"} 1
lat_seconds_bucket{le="+Inf"} 2
lat_seconds_sum 0.3
lat_seconds_count 2
bare 7 1700000000000
this is not a sample
`
	two := "# TYPE req_total counter\nreq_total 5\n"
	fs := newFamilies()
	n, err := fs.add(strings.NewReader(one), lbl("slot", "0", "generation", "3"))
	if n != 7 || err == nil || !strings.Contains(err.Error(), "this is not a sample") {
		t.Fatalf("add: %d samples, %v", n, err)
	}
	if _, err := fs.add(strings.NewReader(two), lbl("slot", "1", "generation", "3")); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	fs.write(&b, false)
	want := `bare{slot="0",generation="3"} 7 1700000000000
# TYPE lat_seconds histogram
lat_seconds_bucket{slot="0",generation="3",le="0.1"} 1
lat_seconds_bucket{slot="0",generation="3",le="+Inf"} 2
lat_seconds_sum{slot="0",generation="3"} 0.3
lat_seconds_count{slot="0",generation="3"} 2
# HELP req_total Requests.
# TYPE req_total counter
req_total{slot="0",generation="3",path="/a,b",note="say \"hi\" {x}"} 3
req_total{slot="0",generation="3",exported_slot="mine"} 1
req_total{slot="1",generation="3"} 5
`
	if b.String() != want {
		t.Fatalf("merged:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	fs.write(&b, true)
	om := b.String()
	for _, line := range []string{"# TYPE req counter", `req_total{slot="1",generation="3"} 5`, "# TYPE bare unknown", "# EOF\n"} {
		if !strings.Contains(om, line) {
			t.Fatalf("OpenMetrics has no %q:\n%s", line, om)
		}
	}
}
