-- The cut-off of `exactly prune -older-than AGE` ($1 in microseconds), by
-- the database's clock, which stamped the tokens' processed_at: a client
-- whose clock runs ahead would otherwise prune tokens younger than AGE.
-- (now(), not CURRENT_TIMESTAMP: the CLI's tests move the database's clock
-- by putting a now() of their own ahead of pg_catalog on the search_path.)
SELECT now() - $1::bigint * interval '1 microsecond'
