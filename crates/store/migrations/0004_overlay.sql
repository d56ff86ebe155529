-- Overlay subnets: the subnet (its index in the overlay range) each member holds; index 0 is the
-- host's. A node keeps its subnet across restarts of either side until it is removed.
CREATE TABLE overlay_subnets (
    node     TEXT PRIMARY KEY,
    idx      INTEGER NOT NULL UNIQUE,
    underlay TEXT
);

-- Reserved overlay addresses. Only the token's nonce is kept, never the token: the token is an
-- HMAC over (ip, node, expiry, nonce) with the host's overlay key.
CREATE TABLE ip_reservations (
    ip            TEXT PRIMARY KEY,
    node          TEXT NOT NULL,
    owner         TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    task_id       INTEGER
);
