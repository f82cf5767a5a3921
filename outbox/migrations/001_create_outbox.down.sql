DROP TABLE {{.DeadLetters}};
DROP TABLE {{.Table}};
