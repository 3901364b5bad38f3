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
