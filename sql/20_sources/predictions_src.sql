-- Model predictions written by `stellardb score` (teff K, logg dex, feh dex, with errors and flags).
-- The one reader of table predictions: every crossmatch, mart and ML view reads predictions_src, so a
-- release can point this view at partitioned Parquet without touching any other view.
create or replace view predictions_src as
select * from predictions;
