-- Payments in minor units. (user_id, idempotency_key) makes a retried create return the same payment.
CREATE TABLE payments (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    currency char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    description text NOT NULL DEFAULT '',
    status text NOT NULL DEFAULT 'created',
    idempotency_key text,
    request_hash text,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX payments_by_user ON payments (user_id, created_at DESC);
