package suite

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// makePlots draws the PNGs with gnuplot and returns their paths by name.
func makePlots(res *Results, dir, gnuplot string) (map[string]string, error) {
	out := map[string]string{}
	if gnuplot == "" {
		return out, fmt.Errorf("gnuplot not found: no plots (apt-get install gnuplot-nox)")
	}
	tmp, err := os.MkdirTemp("", "sockd-bench-plot-")
	if err != nil {
		return out, err
	}
	defer os.RemoveAll(tmp)
	var errs []string
	run := func(name, script string) {
		png := filepath.Join(dir, name+".png")
		sf := filepath.Join(tmp, name+".gp")
		os.WriteFile(sf, []byte(fmt.Sprintf("set terminal pngcairo size %s font 'sans,10'\nset output '%s'\n", sizeOf(name, res), png)+script), 0o644)
		if b, err := exec.Command(gnuplot, sf).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v: %s", name, err, strings.TrimSpace(string(b))))
			return
		}
		out[name] = png
	}
	if len(res.Timelines) > 0 {
		run("timeline", timelineScript(res, tmp))
	}
	if ov := overheadAgg(res); len(ov) > 0 {
		run("throughput", throughputScript(ov, tmp))
		run("balance", balanceScript(ov, tmp))
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return out, nil
}

func sizeOf(name string, res *Results) string {
	switch name {
	case "timeline":
		return fmt.Sprintf("1200,%d", 80+260*len(res.Timelines))
	case "balance":
		return "1200,820"
	}
	return "1200,520"
}

func timelineScript(res *Results, tmp string) string {
	var b strings.Builder
	n := len(res.Timelines)
	maxT, maxLat := 0.0, 1.0
	for _, t := range res.Timelines {
		for _, bk := range t.Buckets {
			maxT = math.Max(maxT, bk.T+0.1)
			maxLat = math.Max(maxLat, bk.P99ms)
		}
	}
	yTop := math.Pow(10, math.Ceil(math.Log10(maxLat*1.5)))
	fmt.Fprintf(&b, "set multiplot layout %d,1 title 'Latency across reloads at %.0f req/s (p50 and p99 per 100 ms; grey: reload in progress; red: failed requests)' font 'sans,12'\n", n, res.Params.ReloadRate)
	fmt.Fprintf(&b, "set logscale y\nset yrange [0.1:%g]\nset xrange [0:%g]\nset ylabel 'latency (ms)'\nset y2label 'failed / 100 ms'\nset y2range [0:*]\nset y2tics\nset ytics nomirror\nset grid ytics\nset key top left horizontal\nset datafile missing 'NaN'\nset style fill solid 1.0 noborder\n", yTop, maxT)
	for i, t := range res.Timelines {
		f := filepath.Join(tmp, fmt.Sprintf("tl%d.dat", i))
		var d strings.Builder
		failed := 0
		for _, bk := range t.Buckets {
			p50, p99 := "NaN", "NaN"
			if bk.OK > 0 {
				p50, p99 = fmt.Sprintf("%.3f", math.Max(bk.P50ms, 0.1)), fmt.Sprintf("%.3f", math.Max(bk.P99ms, 0.1))
			}
			fmt.Fprintf(&d, "%.2f %s %s %d\n", bk.T+0.05, p50, p99, bk.Failed)
			failed += bk.Failed
		}
		os.WriteFile(f, []byte(d.String()), 0o644)
		fmt.Fprintf(&b, "unset object\n")
		for j, e := range t.Reloads {
			end := e.Done
			if end == 0 {
				end = e.T0 + 0.05
			}
			fmt.Fprintf(&b, "set object %d rect from %.3f,graph 0 to %.3f,graph 1 fc rgb '#d8d8d8' fs solid 0.6 noborder behind\n", j+1, e.T0, math.Max(end, e.T0+0.02))
		}
		title := fmt.Sprintf("%s: %d reloads, %d failed requests", infoOf(t.Peer).label, len(t.Reloads), failed)
		if i == n-1 {
			fmt.Fprintf(&b, "set xlabel 'seconds since the load started'\n")
		}
		fmt.Fprintf(&b, "set title \"%s\"\n", title)
		fmt.Fprintf(&b, "plot '%s' using 1:4 axes x1y2 with boxes lc rgb '#d62728' title 'failed', '' using 1:2 with lines lw 1.5 lc rgb '#1f77b4' title 'p50', '' using 1:3 with lines lw 1.5 lc rgb '#ff7f0e' title 'p99'\n", f)
	}
	b.WriteString("unset multiplot\n")
	return b.String()
}

func throughputScript(ov []*ovAgg, tmp string) string {
	f := filepath.Join(tmp, "tp.dat")
	var d strings.Builder
	for i, a := range ov {
		lo, hi := a.rps, a.rps
		for _, r := range a.runs {
			lo, hi = math.Min(lo, r), math.Max(hi, r)
		}
		fmt.Fprintf(&d, "%d \"%s\" %.0f %.0f %.0f %s\n", i, a.name, a.rps, lo, hi, colorOf(a.name))
	}
	os.WriteFile(f, []byte(d.String()), 0o644)
	return fmt.Sprintf(`set title 'Throughput with 2 workers, closed loop (median and range of the runs; the load generator shares the 2 cores)' font 'sans,12'
set ylabel 'requests/s'
set yrange [0:*]
set grid ytics
set style fill solid 0.8 noborder
set boxwidth 0.7
set xtics rotate by -30 nomirror
unset key
plot '%s' using 1:3:6:xtic(2) with boxes lc rgb variable, '' using 1:3:4:5 with yerrorbars lc rgb 'black' pt 0
`, f)
}

func colorOf(name string) string {
	switch {
	case strings.HasPrefix(name, "sockd"):
		return "0x2ca02c"
	case strings.HasPrefix(name, "direct"):
		return "0x7f7f7f"
	}
	return "0x1f77b4"
}

func balanceScript(ov []*ovAgg, tmp string) string {
	var b strings.Builder
	b.WriteString("set multiplot layout 2,1 title 'Requests per worker with 2 workers (all throughput runs summed): share of the busiest and the least busy worker' font 'sans,12'\n")
	b.WriteString("set ylabel 'share (%)'\nset yrange [0:100]\nset grid ytics\nset style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.8 noborder\nset xtics nomirror rotate by -25 font 'sans,9'\nset key top right\n")
	b.WriteString("set arrow 1 from graph 0, first 50 to graph 1, first 50 nohead dt 2 lc rgb 'black'\n")
	for k, title := range []string{"all requests (keep-alive connections stay with the worker that accepted them)", "new-connection requests only"} {
		f := filepath.Join(tmp, fmt.Sprintf("bal%d.dat", k))
		var d strings.Builder
		i := 0
		for _, a := range ov {
			runs := a.shares
			if k == 1 {
				runs = a.sharesNew
			}
			if a.name == "tableflip" || len(runs) == 0 {
				continue
			}
			var sum [2]float64
			tot := 0.0
			for _, r := range runs {
				for j := 0; j < len(r) && j < 2; j++ {
					sum[j] += float64(r[j])
					tot += float64(r[j])
				}
			}
			if tot == 0 {
				continue
			}
			fmt.Fprintf(&d, "%d \"%s\" %.1f %.1f\n", i, a.name, 100*sum[0]/tot, 100*sum[1]/tot)
			i++
		}
		os.WriteFile(f, []byte(d.String()), 0o644)
		fmt.Fprintf(&b, "set title '%s'\n", title)
		fmt.Fprintf(&b, "plot '%s' using 3:xtic(2) title 'busiest worker' lc rgb '#1f77b4', '' using 4 title 'least busy worker' lc rgb '#aec7e8'\n", f)
	}
	b.WriteString("unset multiplot\n")
	return b.String()
}
