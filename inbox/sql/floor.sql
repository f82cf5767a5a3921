SELECT floor_token FROM {{.Floor}}
