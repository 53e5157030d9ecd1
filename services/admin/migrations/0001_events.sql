-- Every event the admin service consumes, once (event_id makes redelivery harmless).
CREATE TABLE events (
    seq bigserial UNIQUE,
    event_id uuid PRIMARY KEY,
    type text NOT NULL,
    source text NOT NULL,
    data jsonb NOT NULL,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_by_type ON events (type);
