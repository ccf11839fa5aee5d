-- Gaia DR3 x SkyMapper: the survey crossmatch (xm_gaia_survey) on skymapper_positions at
-- settings.xmatch_radius_arcsec, under the column names table xmatch has always had.
create or replace view xm_gaia_skymapper as
select
    object_id as skymapper_object_id,
    gaia_source_id,
    sep_arcsec,
    n_candidates,
    dt_yr
from xm_gaia_survey('skymapper_positions', (select value from settings where name = 'xmatch_radius_arcsec'))
