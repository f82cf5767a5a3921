DROP TABLE {{.Floor}};
DROP TABLE {{.Table}};
