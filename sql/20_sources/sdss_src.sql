-- sdss rows as ingested.  The one reader of table sdss (see skymapper_src).
create or replace view sdss_src as
select * from sdss;
