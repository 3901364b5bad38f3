package main

import "testing"

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"nope"}, {"fanout", "-subscribers", "x"}, {"fanout", "extra"}} {
		if code := run(args); code != exitUsage {
			t.Errorf("run(%q) = %d, want %d", args, code, exitUsage)
		}
	}
	if code := run([]string{"help"}); code != 0 {
		t.Errorf("help exits %d", code)
	}
}

func TestShellJoin(t *testing.T) {
	got := shellJoin([]string{"fanout", "-url", "http://a,http://b", "-x", "it's", ""})
	want := `fanout -url http://a,http://b -x 'it'\''s' ''`
	if got != want {
		t.Errorf("shellJoin = %s, want %s", got, want)
	}
}

func TestParseRates(t *testing.T) {
	got, err := parseRates("50000, 100k,0.15M")
	if err != nil || len(got) != 3 || got[0] != 50000 || got[1] != 100000 || got[2] != 150000 {
		t.Errorf("parseRates = %v, %v", got, err)
	}
	for _, bad := range []string{"", ",", "0", "-5", "fast", "10x", "NaN", "Infk"} {
		if _, err := parseRates(bad); err == nil {
			t.Errorf("parseRates(%q) took it", bad)
		}
	}
}

func TestRateAndDeliveriesConflict(t *testing.T) {
	code := run([]string{"fanout", "-rate", "10", "-deliveries", "50000", "-no-write", "-work-dir", t.TempDir()})
	if code != exitFailure {
		t.Errorf("-rate with -deliveries exits %d, want %d", code, exitFailure)
	}
}
