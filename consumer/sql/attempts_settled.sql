-- Forget the attempts of messages settled in this transaction ($4: their
-- offsets): they did not die.
DELETE FROM {{.Attempts}}
WHERE consumer_group = $1 AND kafka_topic = $2 AND kafka_partition = $3 AND kafka_offset = ANY($4)
