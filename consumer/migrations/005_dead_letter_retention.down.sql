DROP INDEX {{.Schema}}.{{.ResolvedIndex}};
