-- Spectroscopic reference labels as ingested (teff K, logg dex, feh dex; position epoch ref_epoch).
-- The one reader of table sos: every crossmatch, mart and ML view reads sos_src, so a
-- release can point this view at partitioned Parquet without touching any other view.
create or replace view sos_src as
select * from sos;
