package output_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sockd/sockd/internal/output"
)

// The counters in the Prometheus text format: a live worker's series by
// slot, generation, pid and stream, and totals that outlive it.
func TestWriteMetrics(t *testing.T) {
	sink := &memSink{}
	r := output.New(output.Options{Sink: sink, MaxLine: 1000})
	p, pid := spawn(t, r, 1, 2, "sleep") // stays: its series are there
	p2, pid2 := spawn(t, r, 0, 2, "big", "2500")
	waitDone(t, p2, 10*time.Second)
	reap(pid2)
	var b bytes.Buffer
	if err := r.WriteMetrics(&b); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	for _, want := range []string{
		"# TYPE sockd_worker_output_lines_total counter\n",
		fmt.Sprintf("sockd_worker_output_lines_total{slot=\"1\",generation=\"2\",pid=\"%d\",stream=\"stdout\"} 0\n", pid),
		"sockd_output_lines_total{stream=\"stdout\"} 4\n", // 3 pieces and "after"
		"sockd_output_bytes_total{stream=\"stdout\"} 2507\n",
		"sockd_output_cut_lines_total{stream=\"stdout\"} 1\n",
		"sockd_output_dropped_lines_total{stream=\"stderr\"} 0\n",
		"sockd_output_follow_skipped_lines_total 0\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, fmt.Sprintf("pid=\"%d\"", pid2)) {
		t.Errorf("series of an exited worker:\n%s", text)
	}
	p.Close(0)
	waitDone(t, p, 10*time.Second)
}
