DROP TABLE {{.Attempts}};
