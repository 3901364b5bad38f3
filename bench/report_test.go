package bench

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fluxbase/fluxbase/bench/plot"
)

func TestReportWritesJSONMarkdownAndPlots(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := &Report{
		Scenario: "demo", Title: "Demo", Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Command: "fluxbench demo -x 1", Machine: DescribeMachine(),
		Targets: []Outcome{OutcomeOf("a", nil), OutcomeOf("b", NotAvailable("feature %s missing", "x")), OutcomeOf("c", errors.New("boom"))},
		Tables:  []Table{{Title: "Results", Columns: []string{"metric", "a"}, Rows: [][]string{{"tps", "1|2"}}}},
		Plots:   []Plot{{Name: "tps", Caption: "c", Chart: plot.Bars{Title: "t", Bars: []plot.Bar{{Label: "a", Value: 1}}}}},
	}
	r.AddParam("writers", 4)
	md, err := r.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(md) != "2026-01-02-demo.md" {
		t.Errorf("markdown at %s", md)
	}
	b, _ := os.ReadFile(md)
	for _, want := range []string{"fluxbench demo -x 1", "| b | skipped | feature x missing |", "| c | failed | boom |", `1\|2`, "![tps](2026-01-02-demo-tps.png)", "| writers | 4 |"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("markdown lacks %q:\n%s", want, b)
		}
	}
	var back Report
	js, _ := os.ReadFile(filepath.Join(dir, "2026-01-02-demo.json"))
	if err := json.Unmarshal(js, &back); err != nil || back.Targets[1].Status != StatusSkipped || back.Plots[0].File != "2026-01-02-demo-tps.png" {
		t.Errorf("json %v %+v", err, back)
	}
	if _, err := os.Stat(filepath.Join(dir, "2026-01-02-demo-tps.png")); err != nil {
		t.Error(err)
	}
}
