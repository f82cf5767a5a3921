-- Waits, up to lock_timeout, for every claim in flight to end; new claims
-- wait behind it until the transaction ends.
LOCK TABLE {{.Table}} IN ACCESS EXCLUSIVE MODE;
