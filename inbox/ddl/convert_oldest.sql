-- The oldest claim in the single table: partitions start at its period.
SELECT min(processed_at) FROM {{.Old}};
