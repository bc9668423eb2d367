-- The frozen work list of a sharded job, built in an in-memory database and copied to
-- Parquet: one row per image in plan order; the plan (its items left out), its hash,
-- the shard count and the store travel as constant columns (dictionary-encoded, so
-- they cost a few bytes).
CREATE TABLE work (
    position   BIGINT NOT NULL,
    image_id   BIGINT NOT NULL,
    path       VARCHAR NOT NULL,
    sha256     VARCHAR,
    label      BIGINT,
    size_bytes BIGINT NOT NULL,
    run_id     VARCHAR NOT NULL,
    plan_hash  VARCHAR NOT NULL,
    shards     BIGINT NOT NULL,
    plan       VARCHAR NOT NULL,
    store      VARCHAR NOT NULL,
    deal_unit  BIGINT NOT NULL,
    -- The file's size and modification time at import: a worker refuses a file that
    -- changed since.
    file_size  BIGINT,
    mtime_ns   BIGINT
);
