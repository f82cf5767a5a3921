-- Retention of resolved dead letters (RelayConfig.DeadLetterRetention,
-- `exactly prune -dead-letters`): the oldest resolved ones, found without
-- reading the unresolved ones.
CREATE INDEX {{.ResolvedIndex}} ON {{.DeadLetters}} (resolved_at) WHERE resolved_at IS NOT NULL;
