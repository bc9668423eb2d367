-- cdwqc store, schema version 1: images, previews, imports, raters, ratings,
-- splits, runs, epochs, predictions, jobs.
-- Timestamps are TIMESTAMPTZ (UTC). Text enumerations are checked here so that a
-- user writing with `cdwqc sql --write` cannot store a value the tool does not know.

CREATE SEQUENCE image_id_seq START 1;
CREATE SEQUENCE import_id_seq START 1;
CREATE SEQUENCE rating_id_seq START 1;
CREATE SEQUENCE job_id_seq START 1;

-- One row per image file ever seen. Files that vanish are marked 'missing', never
-- deleted, so ratings and predictions keep their image.
CREATE TABLE images (
    image_id          BIGINT PRIMARY KEY DEFAULT nextval('image_id_seq'),
    path              VARCHAR NOT NULL UNIQUE,   -- absolute path
    root              VARCHAR NOT NULL,          -- the folder given to `cdwqc import`
    rel_path          VARCHAR NOT NULL,          -- path relative to root
    status            VARCHAR NOT NULL CHECK (status IN ('ok', 'failed', 'missing')),
    error             VARCHAR,                   -- one-line reason when failed
    warnings          VARCHAR,                   -- '; '-separated, e.g. NaN voxels, bad sidecar
    -- BIDS entities (NULL for files outside a BIDS layout)
    subject           VARCHAR,
    session           VARCHAR,
    acq               VARCHAR,
    rec               VARCHAR,
    run               VARCHAR,
    suffix            VARCHAR,
    bids_datatype     VARCHAR,
    other_entities    VARCHAR,
    -- file identity
    file_size         BIGINT NOT NULL,
    mtime_ns          BIGINT NOT NULL,
    sha256            VARCHAR,
    -- header
    nifti_version     TINYINT,
    dim_x             INTEGER,
    dim_y             INTEGER,
    dim_z             INTEGER,
    n_volumes         BIGINT,
    voxel_x           DOUBLE,
    voxel_y           DOUBLE,
    voxel_z           DOUBLE,
    datatype          VARCHAR,
    scl_slope         DOUBLE,
    scl_inter         DOUBLE,
    qform_code        INTEGER,
    sform_code        INTEGER,
    affine_source     VARCHAR,
    orientation       VARCHAR,                   -- axis codes, e.g. 'RAS', 'LPS'
    affine            VARCHAR,                   -- JSON 4x4, voxel -> world mm
    intent_code       INTEGER,
    description       VARCHAR,
    -- intensity summary of the first volume, finite voxels only
    intensity_min     DOUBLE,
    intensity_max     DOUBLE,
    intensity_mean    DOUBLE,
    intensity_std     DOUBLE,
    intensity_p01     DOUBLE,
    intensity_p50     DOUBLE,
    intensity_p99     DOUBLE,
    zero_fraction     DOUBLE,
    nonfinite_voxels  BIGINT,
    -- JSON sidecar
    manufacturer      VARCHAR,
    scanner_model     VARCHAR,
    field_strength    DOUBLE,
    acquisition_type  VARCHAR,
    series_description VARCHAR,
    protocol_name     VARCHAR,
    institution       VARCHAR,
    station           VARCHAR,
    sidecar           VARCHAR,                   -- the sidecar JSON as text
    first_seen        TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

-- Three orthogonal 8-bit slices per image (PNG), so browsing never re-reads NIfTI.
CREATE TABLE previews (
    image_id  BIGINT NOT NULL,
    plane     VARCHAR NOT NULL CHECK (plane IN ('axial', 'coronal', 'sagittal')),
    width     INTEGER NOT NULL,
    height    INTEGER NOT NULL,
    png       BLOB NOT NULL,
    PRIMARY KEY (image_id, plane)
);

-- One row per `cdwqc import` run.
CREATE TABLE imports (
    import_id    BIGINT PRIMARY KEY DEFAULT nextval('import_id_seq'),
    root         VARCHAR NOT NULL,
    status       VARCHAR NOT NULL CHECK (status IN ('running', 'completed', 'interrupted')),
    started_at   TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    finished_at  TIMESTAMPTZ,
    added        BIGINT NOT NULL DEFAULT 0,
    updated      BIGINT NOT NULL DEFAULT 0,
    unchanged    BIGINT NOT NULL DEFAULT 0,
    failed       BIGINT NOT NULL DEFAULT 0,
    missing      BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE raters (
    name        VARCHAR PRIMARY KEY,
    role        VARCHAR NOT NULL DEFAULT 'rater' CHECK (role IN ('rater', 'adjudicator')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

-- Append-only history: every save is a new row; nothing here is ever updated.
-- An undo appends a row with `undoes` set to the rating it withdraws.
CREATE TABLE ratings (
    rating_id        BIGINT PRIMARY KEY DEFAULT nextval('rating_id_seq'),
    image_id         BIGINT NOT NULL,
    rater            VARCHAR NOT NULL,
    usable           BOOLEAN,
    reject_reason    VARCHAR,
    gado             BOOLEAN,
    motion           TINYINT CHECK (motion BETWEEN 0 AND 2),
    contrast         TINYINT CHECK (contrast BETWEEN 0 AND 2),
    noise            TINYINT CHECK (noise BETWEEN 0 AND 2),
    -- good / medium / bad for usable images: the worst grade, or the only thing a
    -- quality-only rating (MRIQC-style) gives, whose gado and grades are then NULL
    quality          VARCHAR CHECK (quality IN ('good', 'medium', 'bad')),
    code             VARCHAR,                    -- the notebook code, e.g. 'kaz'
    comment          VARCHAR,
    confidence       TINYINT CHECK (confidence BETWEEN 1 AND 5),
    time_ms          BIGINT,
    review_later     BOOLEAN NOT NULL DEFAULT false,
    undoes           BIGINT,
    protocol_version VARCHAR NOT NULL,
    source           VARCHAR NOT NULL,           -- 'tui', 'line', 'import:<sha256 of file>'
    rated_at         TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    saved_at         TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

-- Which set each image belongs to in a run's data split.
CREATE TABLE splits (
    split_id   VARCHAR NOT NULL,
    image_id   BIGINT NOT NULL,
    subject    VARCHAR,
    domain     VARCHAR NOT NULL CHECK (domain IN ('source', 'target')),
    "set"      VARCHAR NOT NULL CHECK ("set" IN ('train', 'validation', 'test', 'unlabelled')),
    label      VARCHAR,
    PRIMARY KEY (split_id, image_id)
);

CREATE TABLE runs (
    run_id          VARCHAR PRIMARY KEY,
    kind            VARCHAR NOT NULL CHECK (kind IN ('train', 'infer')),
    task            VARCHAR,
    method          VARCHAR,
    preset          VARCHAR,
    status          VARCHAR NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'interrupted')),
    config          VARCHAR,                     -- JSON
    git_commit      VARCHAR,
    split_id        VARCHAR,
    label_snapshot  VARCHAR,                     -- sha256 of the labels used
    weights_path    VARCHAR,
    metrics         VARCHAR,                     -- JSON
    error           VARCHAR,
    started_at      TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    finished_at     TIMESTAMPTZ
);

CREATE TABLE epochs (
    run_id                 VARCHAR NOT NULL,
    epoch                  INTEGER NOT NULL,
    train_loss             DOUBLE,
    source_loss            DOUBLE,
    target_loss            DOUBLE,
    domain_loss            DOUBLE,
    val_loss               DOUBLE,
    val_balanced_accuracy  DOUBLE,
    alpha                  DOUBLE,
    seconds                DOUBLE,
    recorded_at            TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (run_id, epoch)
);

CREATE TABLE predictions (
    run_id         VARCHAR NOT NULL,
    image_id       BIGINT NOT NULL,
    task           VARCHAR NOT NULL,
    label          VARCHAR,                      -- NULL when the image failed
    probabilities  DOUBLE[],                     -- in the task's class order
    error          VARCHAR,
    predicted_at   TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (run_id, image_id, task)
);

CREATE TABLE jobs (
    job_id       BIGINT PRIMARY KEY DEFAULT nextval('job_id_seq'),
    kind         VARCHAR NOT NULL,               -- 'train', 'infer', ...
    args         VARCHAR NOT NULL,               -- JSON list of command-line arguments
    status       VARCHAR NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    pid          INTEGER,
    run_id       VARCHAR,
    progress     DOUBLE,
    log_path     VARCHAR,
    error        VARCHAR,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    started_at   TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ
);
