package fanout

import (
	"testing"
	"time"
)

func TestDecodeChangeReadsTheHubsKeys(t *testing.T) {
	t.Parallel()
	c, err := DecodeChange(7, changeJSON("update", "todos", 3, map[string]any{"owner": "u1"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Seq != 7 || c.Schema != "public" || c.Table != "todos" || c.Op != "update" || c.event() != "UPDATE" ||
		!c.CommitTS.Equal(time.Date(2024, 5, 1, 10, 0, 0, 123456000, time.UTC)) || len(c.Columns) != 4 || c.Columns[1].Name != "owner" {
		t.Fatalf("decoded %+v", c)
	}
	if v, ok := c.Record.Get("owner"); !ok || string(v) != `"u1"` {
		t.Errorf("record owner = %s, %v", v, ok)
	}
	if v, ok := c.OldRecord.Get("id"); !ok || string(v) != "3" {
		t.Errorf("old record id = %s, %v", v, ok)
	}
	if c.CommitLSN != 0 || c.LSN != 0 || c.XID != 0 || c.TxLast || c.UnchangedToast != nil {
		t.Errorf("keys the hub does not read were decoded: %+v", c.Event)
	}
	// The keys the hub does not read are not checked either.
	c, err = DecodeChange(8, []byte(`{"commit_lsn":5,"lsn":null,"xid":"x","tx_index":{},"tx_last":"no","unchanged_toast":1,"omitted_columns":2,`+
		`"schema":"public","table":"t","op":"insert","pk":{"id":1},"record":{"id":1},"old_record":null,"columns":[]}`))
	if err != nil || c.Table != "t" || c.event() != "INSERT" {
		t.Fatalf("DecodeChange = %+v, %v", c, err)
	}
	if _, err := DecodeChange(9, []byte(`{"schema":"public","table":"t","op":"insert","record":{"id":1},"commit_ts":"yesterday"}`)); err == nil {
		t.Error("an event with an invalid commit_ts was decoded")
	}
}
