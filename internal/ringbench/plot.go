package ringbench

import (
	"fmt"
	"os"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// WritePlot draws the throughput figures as a PNG: one bar chart per
// wake-up policy, a group of bars (one per consumer) for each record size
// and batch size, the bar's height the median records per second.
func (r *Results) WritePlot(path string) error {
	var wakeups, consumers, groups []string
	for _, t := range r.Throughput {
		if !slices.Contains(wakeups, t.Wakeup) {
			wakeups = append(wakeups, t.Wakeup)
		}
		if !slices.Contains(consumers, t.Consumer) {
			consumers = append(consumers, t.Consumer)
		}
		if g := group(t); !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
	}
	if len(wakeups) == 0 {
		return fmt.Errorf("plot: no throughput figures")
	}

	plots := make([][]*plot.Plot, len(wakeups))
	barWidth := vg.Points(60 / float64(len(consumers)))
	for row, wakeup := range wakeups {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%s wake-ups", wakeup)
		p.Y.Label.Text = "M records/s (median)"
		p.X.Label.Text = "record size / batch"
		p.Legend.Top = true
		for i, consumer := range consumers {
			values := make(plotter.Values, len(groups))
			for _, t := range r.Throughput {
				if t.Wakeup == wakeup && t.Consumer == consumer {
					values[slices.Index(groups, group(t))] = t.Rate.Median / 1e6
				}
			}
			bars, err := plotter.NewBarChart(values, barWidth)
			if err != nil {
				return fmt.Errorf("plot: %w", err)
			}
			bars.Color = plotutil.Color(i)
			bars.LineStyle.Width = 0
			bars.Offset = barWidth * vg.Length(float64(i)-float64(len(consumers)-1)/2)
			p.Add(bars)
			p.Legend.Add(consumer, bars)
		}
		p.NominalX(groups...)
		plots[row] = []*plot.Plot{p}
	}

	img := vgimg.New(vg.Points(900), vg.Points(300*float64(len(wakeups))))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(wakeups), Cols: 1, PadY: vg.Points(10), PadX: vg.Points(10),
		PadTop: vg.Points(10), PadBottom: vg.Points(10), PadLeft: vg.Points(10), PadRight: vg.Points(10)}
	canvases := plot.Align(plots, tiles, dc)
	for row := range plots {
		plots[row][0].Draw(canvases[row][0])
	}

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("plot: %w", err)
	}
	return f.Close()
}

func group(t Throughput) string { return fmt.Sprintf("%d B / %d", t.Size, t.Batch) }
