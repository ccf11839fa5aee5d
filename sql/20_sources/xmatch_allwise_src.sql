-- Gaia x allwise pairs.  The one reader of table xmatch_allwise (see xmatch_src).
create or replace view xmatch_allwise_src as
select * from xmatch_allwise;
