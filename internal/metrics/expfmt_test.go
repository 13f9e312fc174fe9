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

// A worker's sample that some parser would refuse is dropped, not passed
// on to break the whole scrape: a value that is not a plain decimal
// number, a timestamp that is not integer milliseconds, a label value that
// is not UTF-8; an unknown TYPE and a HELP that is not UTF-8 are ignored.
func TestWorkerGarbageIsDropped(t *testing.T) {
	in := "# TYPE ok gauge\nok 1\nok{v=\"e\"} -1.5e-3\nok{v=\"inf\"} +Inf\nok{v=\"ts\"} 2 -1700000000123\n" +
		"bad_a 12abc\nbad_b 12,5\nbad_c 1_000\nbad_d 0x1p-2\nbad_e 1e\nbad_f .\nbad_g 1 abc\nbad_h 1 1.5\n" +
		"bad_j 1e400\nbad_k -1e400\nbad_l 1 -9223372036854775808\n" +
		"bad_i{a=\"\xff\xfe\"} 1\n# TYPE odd bogus\n# HELP odd \xff\nodd 3\n"
	fs := newFamilies()
	n, err := fs.add(strings.NewReader(in), lbl("slot", "0"))
	if n != 5 || err == nil {
		t.Fatalf("add: %d samples (want 5), %v", n, err)
	}
	var b bytes.Buffer
	fs.write(&b, false)
	text := b.String()
	if strings.Contains(text, "bad_") || strings.Contains(text, "bogus") || strings.Contains(text, "\xff") {
		t.Fatalf("garbage passed on:\n%s", text)
	}
	want := "odd{slot=\"0\"} 3\n# TYPE ok gauge\nok{slot=\"0\"} 1\nok{slot=\"0\",v=\"e\"} -1.5e-3\nok{slot=\"0\",v=\"inf\"} +Inf\nok{slot=\"0\",v=\"ts\"} 2 -1700000000123\n"
	if text != want {
		t.Fatalf("text:\n%s\nwant:\n%s", text, want)
	}
}

// OpenMetrics has timestamps in seconds (the text format in
// milliseconds), and no gauge family beside a counter, histogram or
// summary that names one of their samples (prometheus_client writes
// X_created so in the text format).
func TestOpenMetricsTimestampsAndCreated(t *testing.T) {
	in := `# HELP app_requests_total Requests.
# TYPE app_requests_total counter
app_requests_total 3 1700000000123
# HELP app_requests_created Requests.
# TYPE app_requests_created gauge
app_requests_created 1.7e+09
# TYPE lat histogram
lat_bucket{le="+Inf"} 1
lat_sum 0.5
lat_count 1
# TYPE lat_created gauge
lat_created 1.7e+09
# TYPE other_created gauge
other_created 4 5
`
	fs := newFamilies()
	if _, err := fs.add(strings.NewReader(in), nil); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	fs.write(&b, true)
	// Sorted by family name: app_requests, lat, other_created.
	want := "# HELP app_requests Requests.\n# TYPE app_requests counter\napp_requests_total 3 1700000000.123\n" +
		"# TYPE lat histogram\nlat_bucket{le=\"+Inf\"} 1\nlat_sum 0.5\nlat_count 1\n" +
		"# TYPE other_created gauge\nother_created 4 0.005\n# EOF\n"
	if b.String() != want {
		t.Fatalf("OpenMetrics:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	fs.write(&b, false)
	if !strings.Contains(b.String(), "app_requests_created 1.7e+09\n") || !strings.Contains(b.String(), "app_requests_total 3 1700000000123\n") {
		t.Fatalf("text format lost the _created gauge or changed the timestamp:\n%s", b.String())
	}
}
