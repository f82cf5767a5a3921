-- Handling attempts that a process may not have lived to finish. A handler
-- that kills its process (a crash, an OOM kill, os.Exit) never returns an
-- error, so the consumer counts the attempts it starts here, committed
-- before the handler runs, when a partition is taken over at an offset an
-- earlier owner started and did not settle (docs/design.md, "Attempts that
-- kill the process"). One row per message started that way; rows below a
-- partition's committed offset are deleted at its next assignment.
CREATE TABLE {{.Attempts}} (
	-- The consumer group: a partition's progress is the group's, and two
	-- groups may share an inbox scope.
	consumer_group  text COLLATE "C" NOT NULL,
	kafka_topic     text NOT NULL,
	kafka_partition integer NOT NULL,
	kafka_offset    bigint NOT NULL,
	starts          integer NOT NULL,
	-- The last offset a death during this start may have happened at: the
	-- end of the first batch for the start of an assignment, else the
	-- message's own offset.
	last_offset     bigint NOT NULL,
	updated_at      timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (consumer_group, kafka_topic, kafka_partition, kafka_offset)
);
