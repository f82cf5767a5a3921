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
	"reflect"
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

// Load renders every .sql file in dir of fsys into the string fields of the
// struct dst points to. Each field names its file in a `sql:"name"` tag
// (name.sql). A file without a field or a field without a file is an error,
// so a query set cannot silently lose or gain a query.
func Load(fsys fs.FS, dir string, vars map[string]string, dst any) error {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("sqltmpl: Load needs a pointer to a struct, got %T", dst)
	}
	v = v.Elem()
	fields := make(map[string]reflect.Value, v.NumField())
	for i := range v.NumField() {
		f := v.Type().Field(i)
		name, ok := f.Tag.Lookup("sql")
		if !ok || f.Type.Kind() != reflect.String {
			return fmt.Errorf("sqltmpl: field %s of %s needs a sql tag and type string", f.Name, v.Type())
		}
		fields[name] = v.Field(i)
	}
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		name := strings.TrimSuffix(e.Name(), ".sql")
		field, ok := fields[name]
		if !ok {
			return fmt.Errorf("sqltmpl: %s/%s is not used by %s", dir, e.Name(), v.Type())
		}
		raw, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		sql, err := Render(e.Name(), string(raw), vars)
		if err != nil {
			return err
		}
		field.SetString(sql)
		delete(fields, name)
	}
	for name := range fields {
		return fmt.Errorf("sqltmpl: %s needs %s/%s.sql, which does not exist", v.Type(), dir, name)
	}
	return nil
}
