-- Blinded work queues: which images each rater is asked to rate, in which order.

CREATE SEQUENCE queue_id_seq START 1;

CREATE TABLE queues (
    queue_id     BIGINT PRIMARY KEY DEFAULT nextval('queue_id_seq'),
    name         VARCHAR NOT NULL UNIQUE,
    sequence     VARCHAR,                  -- BIDS suffix the queue draws from, NULL = all
    overlap      DOUBLE NOT NULL,          -- share of images given to every rater
    seed         BIGINT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

CREATE TABLE queue_items (
    queue_id   BIGINT NOT NULL,
    rater      VARCHAR NOT NULL,
    position   INTEGER NOT NULL,           -- 0-based order in this rater's queue
    image_id   BIGINT NOT NULL,
    shared     BOOLEAN NOT NULL,           -- in the overlap given to every rater
    PRIMARY KEY (queue_id, rater, position)
);

-- Each rater's next images: queue items without a rating in force from that rater.
CREATE VIEW queue_pending AS
SELECT q.queue_id, q.name AS queue, i.rater, i.position, i.image_id, i.shared
FROM queue_items i
JOIN queues q USING (queue_id)
WHERE NOT EXISTS (
    SELECT 1 FROM ratings_latest l WHERE l.image_id = i.image_id AND l.rater = i.rater
)
ORDER BY q.queue_id, i.rater, i.position;
