-- Why each Gaia source is, or is not, in scoring_set: the feature cuts of `features`
-- checked one at a time, the first one a star fails named in `reason` (NULL: the
-- star passes every cut and `stellardb score` predicts for it).  The missing input
-- is named with the command that supplies it.
create or replace view why_not_scored as
select
    source_id,
    case
        when phot_bp_mean_mag is null or phot_rp_mean_mag is null
            then 'no Gaia BP or RP magnitude (phot_bp_mean_mag, phot_rp_mean_mag)'
        when phot_g_mean_mag is null
            then 'no Gaia G magnitude (phot_g_mean_mag)'
        when phot_g_mean_mag > 18.0
            then 'fainter than G = 18 mag (phot_g_mean_mag > 18)'
        when r_med_geo is null
            then 'no Bailer-Jones distance (r_med_geo): `stellardb ingest distances FILE`'
        when skymapper_object_id is null
            then 'no SkyMapper counterpart: `stellardb ingest skymapper FILE` (then xmatch), or outside SkyMapper''s sky'
        when (u_psf is null)::int + (v_psf is null)::int + (g_psf is null)::int
            + (r_psf is null)::int + (i_psf is null)::int + (z_psf is null)::int > 2
            then 'fewer than 4 of the 6 SkyMapper magnitudes uvgriz (u_psf ... z_psf)'
    end as reason
from stars
