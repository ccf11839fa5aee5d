-- ps1 rows as ingested.  The one reader of table ps1 (see skymapper_src).
create or replace view ps1_src as
select * from ps1;
