-- Gaia DR3 gaia_source rows as ingested (archive column names and units, ref_epoch J2016.0).
-- The one reader of table gaia: every crossmatch, mart and ML view reads gaia_src, so a
-- release can point this view at partitioned Parquet without touching any other view.
create or replace view gaia_src as
select * from gaia;
