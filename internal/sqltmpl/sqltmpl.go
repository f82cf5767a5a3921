// Package sqltmpl renders the embedded .sql files of a package with quoted
// identifiers.
//
// Table and schema names are configurable, so the SQL cannot be constant.
// Every value handed to a template must already be quoted with
// pgx.Identifier.Sanitize; the templates never see raw configuration.
package sqltmpl

import (
	"bytes"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"text/template"
)

// Render renders the template text named name with vars.
func Render(name, text string, vars map[string]string) (string, error) {
	tmpl, err := template.New(name).Option("missingkey=error").Parse(text)
	if err != nil {
		return "", fmt.Errorf("parse %s: %w", name, err)
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, vars); err != nil {
		return "", fmt.Errorf("render %s: %w", name, err)
	}
	return buf.String(), nil
}

// RenderDir renders every .sql file in dir of fsys and returns them keyed by
// file name without the extension.
func RenderDir(fsys fs.FS, dir string, vars map[string]string) (map[string]string, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(entries))
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		raw, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		sql, err := Render(e.Name(), string(raw), vars)
		if err != nil {
			return nil, err
		}
		out[strings.TrimSuffix(e.Name(), ".sql")] = sql
	}
	return out, nil
}
