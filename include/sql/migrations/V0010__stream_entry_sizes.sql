-- Per topic of a committed micro-batch, the messages it read and the Pulsar entries they came
-- in: {"<topic>": [messages, entries]}. The stream's source sizes its next batch from them
-- (issue #14): the newest message id of a topic counts entries, not messages, and a sample of a
-- topic's first entries underestimated the producers' batches enough to admit 131,157 messages
-- for a limit of 50,000. NULL for batches committed before this column existed.
ALTER TABLE stream_batches ADD COLUMN entry_sizes jsonb;
