-- Bound how long this batch transaction's session may sit idle in the
-- transaction: if the consumer's connection died without a word (a
-- half-open TCP connection), the server ends the session and releases the
-- inbox claims it holds, instead of keeping them until its TCP keepalive
-- notices (2 hours by default). $1 is Config.TransactionTimeout, in ms.
SELECT set_config('idle_in_transaction_session_timeout', $1, true)
