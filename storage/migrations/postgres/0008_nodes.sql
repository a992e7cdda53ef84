-- The gchd nodes sharing this database. A node holds its row while its
-- lease (lease_until, microseconds of the database's clock) runs; epoch
-- changes at every start, so what a node wrote before a restart or a lapse
-- can be told from what it writes now. address is where other nodes and
-- phones reach its SIP listeners (host:port).
CREATE TABLE nodes (
    name        TEXT   PRIMARY KEY,
    epoch       BIGINT NOT NULL,
    address     TEXT   NOT NULL,
    started     BIGINT NOT NULL,
    lease_until BIGINT NOT NULL
);
