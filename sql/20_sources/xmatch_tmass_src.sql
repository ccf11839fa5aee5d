-- Gaia x tmass pairs.  The one reader of table xmatch_tmass (see xmatch_src).
create or replace view xmatch_tmass_src as
select * from xmatch_tmass;
