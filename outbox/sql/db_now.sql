-- Retention counts by the database's clock, which stamped published_at and
-- resolved_at.
SELECT now()
