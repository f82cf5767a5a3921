-- Scans the default partition under SHARE UPDATE EXCLUSIVE: claims go on.
ALTER TABLE {{.Default}} VALIDATE CONSTRAINT {{.Guard}};
