package ringbench

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sampleResults() *Results {
	r := &Results{Machine: "test machine", Config: DefaultConfig()}
	for _, wakeup := range []string{Default, Sampled} {
		for _, c := range []string{Poll, Ceiling} {
			r.Throughput = append(r.Throughput, Throughput{
				Wakeup: wakeup, Size: 8, Batch: 100, Consumer: c,
				Rate: Spread{Median: 12.5e6, Min: 12e6, Max: 13e6}, OfCeiling: 0.5,
				Dropped: Spread{Median: 0.01}, CPUPerRecord: Spread{Median: 42}, Checked: true,
			})
		}
	}
	r.Latency = []LatencyResult{{Consumer: Poll, Rate: 100000, Size: 64, Records: 30000,
		Latency: Latency{P50: 3 * time.Microsecond, P99: 20 * time.Microsecond, P999: time.Millisecond}, Checked: true}}
	return r
}

func TestWriteTable(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleResults().WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"test machine", "M RECORDS/S", "12.50", "12.00-13.00", "50%", "1.0%", "P999", "20µs", "1ms"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteCSVAndJSON(t *testing.T) {
	r := sampleResults()
	var buf bytes.Buffer
	if err := r.WriteCSV(&buf); err != nil {
		t.Fatal(err)
	}
	rd := csv.NewReader(&buf)
	rd.FieldsPerRecord = -1
	rows, err := rd.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	// Header, 4 throughput rows, header, 1 latency row.
	if len(rows) != 7 || rows[1][4] != "1.25e+07" && rows[1][4] != "12500000" || rows[6][5] != "20000" {
		t.Fatalf("CSV rows: %q", rows)
	}
	buf.Reset()
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var back Results
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Throughput) != 4 || back.Latency[0].Latency.P99 != 20*time.Microsecond || back.Throughput[0].Rate.Median != 12.5e6 {
		t.Fatalf("JSON round trip: %+v", back)
	}
}

func TestWritePlot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bench.png")
	if err := sampleResults().WritePlot(path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 500 || b.Dy() < 400 {
		t.Fatalf("image of %v", b)
	}
	if err := (&Results{}).WritePlot(path); err == nil {
		t.Fatal("plotting no figures succeeded")
	}
}
