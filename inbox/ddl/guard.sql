-- From now on the default partition refuses rows of the range being
-- created. NOT VALID: no scan, the lock is brief; validate.sql checks the
-- rows already there without blocking claims.
ALTER TABLE {{.Default}} ADD CONSTRAINT {{.Guard}} CHECK (token < {{.From}} OR token >= {{.To}}) NOT VALID;
