-- Inbound messages: the ground truth. Everything else can be derived from body + headers.
CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    channel         TEXT NOT NULL,
    received_at     TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    content_type    TEXT,
    message_id      TEXT,
    correlation_id  TEXT,
    reply_to        TEXT,
    headers         TEXT NOT NULL,
    sha256          TEXT NOT NULL,
    body            BYTEA NOT NULL,
    status          TEXT NOT NULL,
    jurisdiction    TEXT,
    patient_key     TEXT,
    rule_codes      TEXT,
    referral        TEXT,
    outcome         TEXT
);
CREATE INDEX messages_status ON messages (status);

-- One row per patient: the lock that serialises budget checks and ledger updates.
CREATE TABLE patients (
    patient_key TEXT PRIMARY KEY
);

-- Entitlement ledger: append-only claims of accepted referrals on the budget.
CREATE TABLE ledger (
    id          BIGSERIAL PRIMARY KEY,
    patient_key TEXT NOT NULL REFERENCES patients (patient_key),
    message     TEXT NOT NULL REFERENCES messages (id),
    start_date  TEXT NOT NULL,
    minutes     BIGINT NOT NULL,
    trial_units BIGINT NOT NULL
);
CREATE INDEX ledger_patient ON ledger (patient_key);

-- Transactional outbox: written in the same transaction as the verdict, relayed to the broker.
CREATE TABLE outbox (
    id             BIGSERIAL PRIMARY KEY,
    message        TEXT NOT NULL REFERENCES messages (id),
    kind           TEXT NOT NULL,
    exchange       TEXT NOT NULL,
    routing_key    TEXT NOT NULL,
    content_type   TEXT NOT NULL,
    correlation_id TEXT,
    headers        TEXT NOT NULL,
    body           BYTEA NOT NULL,
    status         TEXT NOT NULL,
    attempts       BIGINT NOT NULL DEFAULT 0,
    -- A relay claims rows before publishing: several gateway instances never publish one row
    -- twice, and rows of a relay that died are claimed again when the lease runs out.
    claimed_by     TEXT,
    lease_until    BIGINT NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL,
    sent_at        TEXT
);
CREATE INDEX outbox_pending ON outbox (status, id);
