-- Read markers (readUpTo, getMyGroups "un"): per member, the MID up to which
-- the group counts as read. A member starts at the newest read message, so
-- that unread counts begin where reading stopped.
ALTER TABLE members ADD COLUMN read_mid BIGINT NOT NULL DEFAULT 0;
UPDATE members SET read_mid = r.mid FROM (
        SELECT d.login, e.group_id, MAX(d.mid) AS mid
        FROM deliveries d JOIN events e ON e.mid = d.mid
        WHERE e.kind = 'MSG' AND d.rd_at > 0
        GROUP BY d.login, e.group_id) AS r
    WHERE r.login = members.login AND r.group_id = members.group_id;

-- confMessage and readMessage with the MID a DM notification carries (the
-- deleted message's) find the DM event by it.
CREATE INDEX events_dm_ref ON events (ref) WHERE kind = 'DM';
