-- tmass rows as ingested.  The one reader of table tmass (see skymapper_src).
create or replace view tmass_src as
select * from tmass;
