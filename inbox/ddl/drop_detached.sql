-- Retire one time partition, second step: a table detached by drop.sql (or
-- left detached by a run that stopped between the steps).
DROP TABLE IF EXISTS {{.Partition}};
