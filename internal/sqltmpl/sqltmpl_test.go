package sqltmpl

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestLoad(t *testing.T) {
	fsys := fstest.MapFS{
		"sql/claim.sql":      {Data: []byte("SELECT 1 FROM {{.Table}}")},
		"sql/set_result.sql": {Data: []byte("UPDATE {{.Table}}")},
	}
	vars := map[string]string{"Table": `"t"`}

	var q struct {
		Claim     string `sql:"claim"`
		SetResult string `sql:"set_result"`
	}
	if err := Load(fsys, "sql", vars, &q); err != nil {
		t.Fatal(err)
	}
	if q.Claim != `SELECT 1 FROM "t"` || q.SetResult != `UPDATE "t"` {
		t.Fatalf("rendered %+v", q)
	}

	var missing struct {
		Claim     string `sql:"claim"`
		SetResult string `sql:"set_result"`
		Prune     string `sql:"prune"`
	}
	if err := Load(fsys, "sql", vars, &missing); err == nil || !strings.Contains(err.Error(), "prune.sql, which does not exist") {
		t.Fatalf("a field without a file: err = %v", err)
	}

	var unused struct {
		Claim string `sql:"claim"`
	}
	if err := Load(fsys, "sql", vars, &unused); err == nil || !strings.Contains(err.Error(), "set_result.sql is not used") {
		t.Fatalf("a file without a field: err = %v", err)
	}

	if err := Load(fsys, "sql", map[string]string{}, &q); err == nil {
		t.Fatal("a template variable that is not given must fail")
	}
}
