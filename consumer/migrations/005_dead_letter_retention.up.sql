-- Retention of resolved dead letters (Config.DeadLetterRetention, `exactly
-- prune -dead-letters`): the oldest resolved ones of a scope, found without
-- reading the unresolved ones. Partial, so it costs nothing until operators
-- resolve dead letters.
CREATE INDEX {{.ResolvedIndex}} ON {{.Table}} (scope, resolved_at) WHERE resolved_at IS NOT NULL;
