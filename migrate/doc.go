// Package migrate applies the versioned SQL migrations that the inbox,
// consumer and outbox packages embed.
//
// Each package ships numbered NNN_name.up.sql and NNN_name.down.sql files and
// turns them into a [Line] for the schema and table its Config names (every
// configured name is quoted with pgx.Identifier before it reaches SQL).
// [Up] applies what is missing in one transaction under an advisory lock, so
// many processes may call it at start-up at once; [Down] reverts one step;
// [Status] reports what is applied; [Line.SQL] prints the script for teams
// that run goose, atlas or plain psql instead.
//
// Applied steps are recorded in a table named exactly_migrations in each
// line's schema, keyed by component, target table and version.
package migrate
