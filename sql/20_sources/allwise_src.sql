-- allwise rows as ingested.  The one reader of table allwise (see skymapper_src).
create or replace view allwise_src as
select * from allwise;
