UPDATE {{.Floor}} SET floor_token = greatest(floor_token, $1), raised_at = now()
