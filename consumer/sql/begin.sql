-- Begins a batch transaction, in the same round trip bounding how long its
-- session may sit idle in the transaction: if the consumer's connection died
-- without a word (a half-open TCP connection), the server ends the session
-- and releases the inbox claims it holds, instead of keeping them until its
-- TCP keepalive notices (2 hours by default). The value is
-- Config.TransactionTimeout in milliseconds, an integer.
BEGIN; SET LOCAL idle_in_transaction_session_timeout = {{.TxTimeoutMs}}
