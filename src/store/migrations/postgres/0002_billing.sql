-- Billing: the insurer's answers, delivered sessions, and counters (§ 302 interchange numbers).

-- The latest answer of the insurer to a referral's preauthorization Claim.
CREATE TABLE approvals (
    referral        TEXT PRIMARY KEY REFERENCES messages (id),
    message         TEXT NOT NULL REFERENCES messages (id),
    approved        BIGINT NOT NULL,
    approval_number TEXT,
    approval_date   TEXT,
    period_start    TEXT,
    period_end      TEXT,
    units           BIGINT,
    recorded_at     TEXT NOT NULL
);

-- Accepted (and later cancelled) delivered sessions; rejected reports live only in their
-- message's outcome, so a corrected report of the same session can be accepted later.
CREATE TABLE sessions (
    session_key     TEXT PRIMARY KEY,
    message         TEXT NOT NULL REFERENCES messages (id),
    referral        TEXT NOT NULL REFERENCES messages (id),
    patient_key     TEXT NOT NULL,
    session_date    TEXT NOT NULL,
    start_time      TEXT,
    minutes         BIGINT NOT NULL,
    delivery        TEXT NOT NULL,
    setting         TEXT NOT NULL,
    trial           BIGINT NOT NULL,
    professional    TEXT,
    budget_minutes  BIGINT NOT NULL,
    unit_minutes    BIGINT NOT NULL,
    status          TEXT NOT NULL,
    billed_in       TEXT,
    cancelled_after_billing BIGINT NOT NULL DEFAULT 0,
    corrected_in    TEXT
);
CREATE INDEX sessions_referral ON sessions (referral);
CREATE INDEX sessions_patient ON sessions (patient_key, status);

-- Named counters, e.g. the Datenaustauschreferenz per sender and recipient.
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
