-- One shard's predictions, the columns of the store's `predictions` table.
CREATE TABLE part (
    run_id        VARCHAR NOT NULL,
    image_id      BIGINT NOT NULL,
    task          VARCHAR NOT NULL,
    label         VARCHAR,
    probabilities DOUBLE[],
    error         VARCHAR,
    domain_target DOUBLE,
    reason        VARCHAR
);
