package ringbench

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
)

// WriteTable writes the results as aligned tables for a terminal.
func (r *Results) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "machine: %s\n", r.Machine)
	fmt.Fprintf(w, "%d runs of %v each, consumers run alternately; ring %d KiB; medians (min-max)\n\n",
		r.Config.Runs, r.Config.Duration, r.Config.RingSize>>10)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "WAKEUP\tSIZE\tBATCH\tCONSUMER\tM RECORDS/S\tRANGE\tOF CEILING\tDROPPED\tCPU NS/REC\tCHECKED\t")
	for _, t := range r.Throughput {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%.2f\t%.2f-%.2f\t%s\t%.1f%%\t%.1f\t%s\t\n",
			t.Wakeup, t.Size, t.Batch, t.Consumer,
			t.Rate.Median/1e6, t.Rate.Min/1e6, t.Rate.Max/1e6,
			percent(t.OfCeiling), 100*t.Dropped.Median, t.CPUPerRecord.Median, checked(t.Checked))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Latency) == 0 {
		return nil
	}
	fmt.Fprintf(w, "\nwake-up latency, bpf_ktime_get_ns in the record to CLOCK_MONOTONIC in the callback\n\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "CONSUMER\tRECORDS/S\tSIZE\tRECORDS\tP50\tP99\tP999\tCHECKED\t")
	for _, l := range r.Latency {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%v\t%v\t%v\t%s\t\n", l.Consumer, l.Rate, l.Size, l.Records,
			l.Latency.P50, l.Latency.P99, l.Latency.P999, checked(l.Checked))
	}
	return tw.Flush()
}

func percent(share float64) string {
	if share == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*share)
}

func checked(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

// WriteJSON writes the results as one JSON document.
func (r *Results) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteCSV writes one row per throughput figure, then one per latency
// figure, each table with its own header row.
func (r *Results) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	cw.Write([]string{"wakeup", "size", "batch", "consumer", "records_per_second", "min", "max",
		"share_of_ceiling", "dropped_share", "cpu_ns_per_record", "checked"})
	for _, t := range r.Throughput {
		cw.Write([]string{t.Wakeup, strconv.Itoa(t.Size), strconv.Itoa(t.Batch), t.Consumer,
			f(t.Rate.Median), f(t.Rate.Min), f(t.Rate.Max), f(t.OfCeiling), f(t.Dropped.Median),
			f(t.CPUPerRecord.Median), strconv.FormatBool(t.Checked)})
	}
	if len(r.Latency) > 0 {
		cw.Write([]string{"consumer", "records_per_second", "size", "records", "p50_ns", "p99_ns", "p999_ns", "checked"})
		for _, l := range r.Latency {
			cw.Write([]string{l.Consumer, strconv.Itoa(l.Rate), strconv.Itoa(l.Size), strconv.Itoa(l.Records),
				strconv.FormatInt(l.Latency.P50.Nanoseconds(), 10), strconv.FormatInt(l.Latency.P99.Nanoseconds(), 10),
				strconv.FormatInt(l.Latency.P999.Nanoseconds(), 10), strconv.FormatBool(l.Checked)})
		}
	}
	cw.Flush()
	return cw.Error()
}
