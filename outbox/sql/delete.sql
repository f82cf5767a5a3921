DELETE FROM {{.Table}} WHERE id = ANY ($1::int8[])
