package plot

import (
	"bytes"
	"image/png"
	"testing"
)

func TestChartsRender(t *testing.T) {
	t.Parallel()
	for name, chart := range map[string]Chart{
		"lines": Lines{Title: "t", XLabel: "x", YLabel: "y", Series: []Series{
			{Name: "a", X: []float64{0, 1, 2}, Y: []float64{1, 5, 2}},
			{Name: "b", X: []float64{0}, Y: []float64{3}},
		}, XTicks: []Tick{{0, "0%"}, {2, "99%"}}},
		"empty lines": Lines{Title: "nothing"},
		"bars":        Bars{Title: "t", YLabel: "tps", Bars: []Bar{{"off", 1200}, {"notify", 800}}},
		"zero bars":   Bars{Title: "t", Bars: []Bar{{"none", 0}}},
	} {
		var buf bytes.Buffer
		if err := chart.PNG(&buf); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		img, err := png.Decode(&buf)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if b := img.Bounds(); b.Dx() != Width || b.Dy() != Height {
			t.Errorf("%s: size %v", name, b)
		}
	}
}

func TestNiceTicks(t *testing.T) {
	t.Parallel()
	for _, hi := range []float64{1, 97, 100, 17076, 0.3} {
		got := niceTicks(0, hi, 6)
		if got[0] != 0 || got[len(got)-1] < hi || len(got) > 9 {
			t.Errorf("ticks up to %v: %v", hi, got)
		}
	}
}
