-- Gaia x sdss pairs.  The one reader of table xmatch_sdss (see xmatch_src).
create or replace view xmatch_sdss_src as
select * from xmatch_sdss;
