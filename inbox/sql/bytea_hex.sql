-- pg_get_expr prints bytea partition bounds in the session's bytea_output.
SELECT set_config('bytea_output', 'hex', true)
