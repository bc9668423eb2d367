-- The dashboard's copy of the `iqm_outliers` groups (rows of `iqm_groups.sql`, in its
-- column order), kept on the connection that reads them so that the outlier flags can
-- be computed against them (`image_iqm_flags_from_groups.sql`).
CREATE OR REPLACE TEMP TABLE iqm_group_stats (
    suffix        VARCHAR,
    scanner       VARCHAR,
    metric        VARCHAR,
    group_median  DOUBLE,
    group_mad     DOUBLE,
    group_images  BIGINT,
    iqm_version   INTEGER
);
