-- A new time partition that takes over rows the default partition holds in
-- its range (tokens claimed while the partition did not exist yet). The
-- table lock keeps every claim out until the rows are in their partition, so
-- no claim can see a token in neither place. Attaching scans the default
-- partition under that lock: cheap while it holds few rows, which is why
-- CreatePartitions moves at most PartitionMoveLimit rows.
LOCK TABLE {{.Table}} IN ACCESS EXCLUSIVE MODE;
CREATE TABLE {{.Partition}} (LIKE {{.Table}} INCLUDING DEFAULTS);
INSERT INTO {{.Partition}} SELECT * FROM {{.Default}} WHERE token >= {{.From}} AND token < {{.To}};
DELETE FROM {{.Default}} WHERE token >= {{.From}} AND token < {{.To}};
ALTER TABLE {{.Default}} DROP CONSTRAINT IF EXISTS {{.Guard}};
ALTER TABLE {{.Table}} ATTACH PARTITION {{.Partition}} FOR VALUES FROM ({{.From}}) TO ({{.To}});
