-- Gaia x ps1 pairs.  The one reader of table xmatch_ps1 (see xmatch_src).
create or replace view xmatch_ps1_src as
select * from xmatch_ps1;
