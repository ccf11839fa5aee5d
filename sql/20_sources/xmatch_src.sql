-- Gaia x SkyMapper pairs materialised by `stellardb xmatch` from xm_gaia_skymapper.
-- The one reader of table xmatch: every crossmatch, mart and ML view reads xmatch_src, so a
-- release can point this view at partitioned Parquet without touching any other view.
create or replace view xmatch_src as
select * from xmatch;
