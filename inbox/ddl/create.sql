-- A new time partition, when the default partition holds no row of its
-- range: a guard constraint on the default partition (guard.sql, then
-- validate.sql) proves that, so Postgres skips scanning the default
-- partition while it holds the table's lock.
CREATE TABLE {{.Partition}} PARTITION OF {{.Table}} FOR VALUES FROM ({{.From}}) TO ({{.To}});
ALTER TABLE {{.Default}} DROP CONSTRAINT IF EXISTS {{.Guard}};
