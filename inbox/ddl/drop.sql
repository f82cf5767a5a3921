-- Retire one time partition. The caller holds the table's ACCESS EXCLUSIVE
-- lock and raised the floor above this range in the same transaction.
ALTER TABLE {{.Table}} DETACH PARTITION {{.Partition}};
DROP TABLE {{.Partition}};
