SELECT reason, count(*) FROM {{.OutboxDeadLetters}} GROUP BY reason ORDER BY reason
