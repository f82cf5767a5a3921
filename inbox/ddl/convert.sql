-- ConvertToPartitioned, first step: take the single table from every claim
-- (they wait until the conversion commits) and rename it out of the way.
LOCK TABLE {{.Table}} IN ACCESS EXCLUSIVE MODE;
ALTER TABLE {{.Table}} RENAME TO {{.OldName}};
