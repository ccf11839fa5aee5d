-- Gaia DR3 x any photometric survey: the one crossmatch definition, applied per survey.
-- `positions` names a <survey>_positions view (object_id, ra_deg, dec_deg, epoch_yr: the
-- row's position and the Julian year it was measured); `radius_arcsec` is the survey's
-- settings row.  For each survey source: the nearest Gaia source within radius_arcsec,
-- with Gaia moved along its proper motion from ref_epoch (J2016.0) to that row's own
-- epoch (xm_nearest_gaia).  A Gaia source keeps only its nearest partner; the survey
-- sources it turns down stay unmatched (their nearest Gaia source belongs to a closer
-- one: xm_gaia_keeps_nearest).  Ties go to the smaller id.
create or replace macro xm_gaia_survey(positions, radius_arcsec) as table
with

nearest as (
    select * from xm_nearest_gaia(positions, radius_arcsec)
)

select * from xm_gaia_keeps_nearest('nearest')
