-- Forget every attempt of a partition.
DELETE FROM {{.Attempts}} WHERE consumer_group = $1 AND kafka_topic = $2 AND kafka_partition = $3
