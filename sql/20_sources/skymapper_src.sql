-- SkyMapper master rows as ingested (positions at each row's mean_epoch, MJD).
-- The one reader of table skymapper: every crossmatch, mart and ML view reads skymapper_src, so a
-- release can point this view at partitioned Parquet without touching any other view.
create or replace view skymapper_src as
select * from skymapper;
