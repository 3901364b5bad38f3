package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fluxbase/fluxbase/bench/plot"
)

// Report is the outcome of one scenario run: what ran where, each target's
// status, the result tables, plots and the raw data.
type Report struct {
	Scenario string    `json:"scenario"`
	Title    string    `json:"title"`
	About    string    `json:"about"` // what is measured and how, one paragraph
	Started  time.Time `json:"started"`
	Elapsed  float64   `json:"elapsed_seconds"`
	Command  string    `json:"command"`
	Machine  Machine   `json:"machine"`
	Params   []Param   `json:"parameters"`
	Targets  []Outcome `json:"targets"`
	Tables   []Table   `json:"tables"`
	Plots    []Plot    `json:"plots"`
	Notes    []string  `json:"notes,omitempty"`
	// Data is the scenario's own result structure, for tools.
	Data any `json:"data,omitempty"`
}

// AddOutcome records how target ended (see OutcomeOf), logs it to p
// unless it measured, and reports whether it did.
func (r *Report) AddOutcome(p *Progress, target string, err error) bool {
	o := OutcomeOf(target, err)
	r.Targets = append(r.Targets, o)
	if o.Status != StatusOK {
		p.Logf("%s %s: %s: %s", r.Scenario, target, o.Status, o.Reason)
	}
	return o.Status == StatusOK
}

// Param is one setting of the run.
type Param struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Table is a titled grid; the first column names the rows.
type Table struct {
	Title   string     `json:"title"`
	Columns []string   `json:"columns"`
	Rows    [][]string `json:"rows"`
}

// Plot is a chart and the file it is written to.
type Plot struct {
	Name    string     `json:"name"` // file name suffix, e.g. "latency"
	Caption string     `json:"caption"`
	File    string     `json:"file,omitempty"`
	Chart   plot.Chart `json:"-"`
}

// AddParam appends a setting, formatted with %v.
func (r *Report) AddParam(name string, value any) {
	r.Params = append(r.Params, Param{name, fmt.Sprint(value)})
}

// Print writes the statuses and tables as aligned text.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "\n== %s ==\n", r.Title)
	for _, o := range r.Targets {
		if o.Status != StatusOK {
			fmt.Fprintf(w, "%s: %s — %s\n", o.Target, strings.ToUpper(string(o.Status)), o.Reason)
		}
	}
	for _, t := range r.Tables {
		fmt.Fprintf(w, "\n%s\n", t.Title)
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(t.Columns, "\t"))
		for _, row := range t.Rows {
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
		tw.Flush()
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

// Write stores the report in dir as <date>-<scenario>.json and .md, with
// its plots as <date>-<scenario>-<plot>.png, and returns the Markdown path.
func (r *Report) Write(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("results directory: %w", err)
	}
	base := r.Started.Format("2006-01-02") + "-" + r.Scenario
	for i := range r.Plots {
		p := &r.Plots[i]
		p.File = base + "-" + p.Name + ".png"
		if err := plot.WriteFile(filepath.Join(dir, p.File), p.Chart); err != nil {
			return "", err
		}
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, base+".json"), append(js, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("write report: %w", err)
	}
	md := filepath.Join(dir, base+".md")
	if err := os.WriteFile(md, []byte(r.Markdown()), 0o644); err != nil {
		return "", fmt.Errorf("write report: %w", err)
	}
	return md, nil
}

// Markdown renders the report for people.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n", r.Title)
	if r.About != "" {
		fmt.Fprintf(&b, "%s\n\n", r.About)
	}
	fmt.Fprintf(&b, "Run %s, %.0f s.\n\n```\n%s\n```\n\n", r.Started.UTC().Format("2006-01-02 15:04 UTC"), r.Elapsed, r.Command)

	b.WriteString("## Machine\n\n| | |\n|---|---|\n")
	m := r.Machine
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "| %s | %s |\n", k, mdEscape(v))
		}
	}
	row("CPU", m.CPU)
	row("cores", fmt.Sprint(m.Cores))
	row("memory", fmt.Sprintf("%.1f GiB", float64(m.MemoryBytes)/(1<<30)))
	row("kernel", m.Kernel)
	row("OS", m.OS)
	row("Go", m.GoVersion)
	row("open files (soft/hard)", m.NoFile)
	row("load average at start", m.LoadAvg)
	row("CPU busy just before the run", fmt.Sprintf("%.0f%%", 100*m.BusyBefore))
	row("PostgreSQL", m.PostgreSQL)
	row("Fluxbase", m.Fluxbase)

	if len(r.Params) > 0 {
		b.WriteString("\n## Parameters\n\n| parameter | value |\n|---|---|\n")
		for _, p := range r.Params {
			fmt.Fprintf(&b, "| %s | %s |\n", p.Name, mdEscape(p.Value))
		}
	}

	b.WriteString("\n## Targets\n\n| target | status | |\n|---|---|---|\n")
	for _, o := range r.Targets {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", o.Target, o.Status, mdEscape(o.Reason))
	}

	for _, t := range r.Tables {
		fmt.Fprintf(&b, "\n## %s\n\n", t.Title)
		fmt.Fprintf(&b, "| %s |\n|%s\n", strings.Join(t.Columns, " | "), strings.Repeat("---|", len(t.Columns)))
		for _, row := range t.Rows {
			cells := make([]string, len(row))
			for i, c := range row {
				cells[i] = mdEscape(c)
			}
			fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | "))
		}
	}
	if len(r.Plots) > 0 {
		b.WriteString("\n## Plots\n")
		for _, p := range r.Plots {
			fmt.Fprintf(&b, "\n%s\n\n![%s](%s)\n", p.Caption, p.Name, p.File)
		}
	}
	if len(r.Notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}

func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

// Ratio formats a/b as "0.52×", for a figure beside its limit or baseline;
// "n/a" when b is zero.
func Ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", a/b)
}
