-- The frozen work list of a sharded import, built in an in-memory database and copied
-- to Parquet: one row per file the submitting command saw, in walk order. `state` is
-- `todo` (new or changed: a shard analyses it), `unchanged` (same size and time as
-- stored) or `gone` (stored under the root, no longer found: the merge marks it
-- missing). The store's row as it was when frozen travels with each file, so the merge
-- can tell its own writes from changes made in the store since. The root, the options,
-- the plan hash, the shard count and the store are constant columns.
CREATE TABLE import_list (
    position       BIGINT NOT NULL,
    path           VARCHAR NOT NULL,
    state          VARCHAR NOT NULL,
    size_bytes     BIGINT NOT NULL,
    known_image_id BIGINT,
    known_size     BIGINT,
    known_mtime_ns BIGINT,
    known_sha256   VARCHAR,
    known_status   VARCHAR,
    root           VARCHAR NOT NULL,
    iqm            BOOLEAN NOT NULL,
    plan_hash      VARCHAR NOT NULL,
    shards         BIGINT NOT NULL,
    store          VARCHAR NOT NULL
);
