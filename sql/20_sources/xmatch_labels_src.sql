-- Position-only labels matched to Gaia, materialised from xm_labels_gaia.
-- The one reader of table xmatch_labels: every crossmatch, mart and ML view reads xmatch_labels_src, so a
-- release can point this view at partitioned Parquet without touching any other view.
create or replace view xmatch_labels_src as
select * from xmatch_labels;
