-- Bailer-Jones (2021) distances as ingested (r_med_geo, r_med_photogeo in pc).
-- The one reader of table distances: every crossmatch, mart and ML view reads distances_src, so a
-- release can point this view at partitioned Parquet without touching any other view.
create or replace view distances_src as
select * from distances;
