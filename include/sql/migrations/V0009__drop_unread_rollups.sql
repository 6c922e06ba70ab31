-- The 15-minute session rollups of V0005/V0006 (session_slots, activity_slots, activity_counts)
-- have had no reader since /metrics counts distinct sessions and customers from the bitmaps of
-- V0007, yet every load still paid for them: 12 of a 1M-event load's 44 commit seconds
-- (docs/performance.md, issue #15). The lake and the events table keep everything they held.
DROP FUNCTION refresh_activity_slots(text, text[], text[]);
DROP VIEW activity_slots_derived;
DROP TABLE activity_counts;
DROP TABLE activity_slots;
DROP TABLE session_slots;
