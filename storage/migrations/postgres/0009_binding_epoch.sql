-- The epoch of the node whose flow reaches a binding (nodes.epoch when it
-- was written): a binding held by a connection is reachable only while
-- that node runs under the same epoch, since the connection died with the
-- process that had it. 0 for bindings written before nodes had epochs.
ALTER TABLE bindings ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
