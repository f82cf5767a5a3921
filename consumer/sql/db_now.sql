-- Retention counts by the database's clock, which stamped what it retires.
SELECT now()
