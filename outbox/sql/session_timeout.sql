-- On a shard's connection, once it holds the shard's lock: the server ends
-- the session when it sits idle longer than $1 (ms), which a relay never
-- does (it polls every PollInterval and backs off at most RetryMax), so that
-- a session whose relay vanished without closing the connection (a
-- half-open TCP connection) releases the shard's advisory lock to another
-- relay instead of holding it until the server's TCP keepalive notices
-- (2 hours by default). Postgres 14 and later.
SELECT set_config('idle_session_timeout', $1, false)
