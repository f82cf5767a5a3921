-- Messages the consumer could not process, kept with everything needed to
-- inspect and replay them. A message is dead-lettered in the same
-- transaction that lets its partition's offset move past it.
CREATE TABLE {{.Table}} (
	id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	scope           text COLLATE "C" NOT NULL,
	token           text,
	reason          text NOT NULL,
	error           text NOT NULL,
	attempts        integer NOT NULL,
	kafka_topic     text NOT NULL,
	kafka_partition integer NOT NULL,
	kafka_offset    bigint NOT NULL,
	kafka_key       bytea,
	kafka_value     bytea,
	header_keys     text[] NOT NULL DEFAULT '{}',
	header_values   bytea[] NOT NULL DEFAULT '{}',
	message_time    timestamptz,
	created_at      timestamptz NOT NULL DEFAULT now(),
	-- A redelivered message that fails again is not recorded twice.
	CONSTRAINT {{.Unique}} UNIQUE (scope, kafka_topic, kafka_partition, kafka_offset)
);

CREATE INDEX {{.ReasonIndex}} ON {{.Table}} (scope, reason, created_at);
