-- Every model input of every Gaia source, one row per source: the seed's 27 inputs
-- (view features) and Gaia's G with the G, BP and RP errors, then each photometric
-- survey's bands (<survey>_features), and per survey whether the star has enough of it.
-- A feature set (stellardb.ml.feature_sets) is Gaia plus some surveys; a star can use it
-- when it passes the Gaia cuts and those surveys' cuts.  The Gaia cuts are what every
-- model needs: G, BP, RP and a Bailer-Jones distance (no magnitude limit: a faint star
-- gets the model its data allow).  passes_skymapper_cuts is the seed's passes_feature_cuts
-- (G <= 18 and at least 4 of the 6 SkyMapper bands).
-- Gaia magnitude errors: sigma_mag = 2.5 / ln(10) / (flux / flux_error) = 1.0857 / flux_over_error.
create or replace view all_features as
with

final as (
    select
        f.*,
        ----------  Gaia DR3 photometry beyond the seed's inputs
        g.phot_g_mean_mag::double as phot_g_mean_mag,
        1.0857 / g.phot_g_mean_flux_over_error::double as phot_g_mean_mag_error,
        1.0857 / g.phot_bp_mean_flux_over_error::double as phot_bp_mean_mag_error,
        1.0857 / g.phot_rp_mean_flux_over_error::double as phot_rp_mean_mag_error,
        ----------  2MASS All-Sky Point Source Catalog (PSC) (tmass_features)
        tmass.j_m,
        tmass.j_msigcom,
        tmass.h_m,
        tmass.h_msigcom,
        tmass.k_m,
        tmass.k_msigcom,
        ----------  AllWISE Source Catalog (allwise_features)
        allwise.w1mpro,
        allwise.w1sigmpro,
        allwise.w2mpro,
        allwise.w2sigmpro,
        allwise.w3mpro,
        allwise.w3sigmpro,
        allwise.w4mpro,
        allwise.w4sigmpro,
        ----------  Pan-STARRS1 DR2 mean object photometry (ObjectThin + MeanObject) (ps1_features)
        ps1.gMeanPSFMag,
        ps1.gMeanPSFMagErr,
        ps1.rMeanPSFMag,
        ps1.rMeanPSFMagErr,
        ps1.iMeanPSFMag,
        ps1.iMeanPSFMagErr,
        ps1.zMeanPSFMag,
        ps1.zMeanPSFMagErr,
        ps1.yMeanPSFMag,
        ps1.yMeanPSFMagErr,
        ----------  SDSS DR17 PhotoObj (primary photometry) (sdss_features)
        sdss.psfMag_u,
        sdss.psfMagErr_u,
        sdss.psfMag_g,
        sdss.psfMagErr_g,
        sdss.psfMag_r,
        sdss.psfMagErr_r,
        sdss.psfMag_i,
        sdss.psfMagErr_i,
        sdss.psfMag_z,
        sdss.psfMagErr_z,
        ----------  which inputs the star has
        coalesce(
            f.phot_bp_mean_mag is not null and f.phot_rp_mean_mag is not null
            and g.phot_g_mean_mag is not null and f.r_med_geo is not null,
            false
        ) as passes_gaia_cuts,
        f.passes_feature_cuts as passes_skymapper_cuts,
        coalesce(tmass.passes_tmass_cuts, false) as passes_tmass_cuts,
        coalesce(allwise.passes_allwise_cuts, false) as passes_allwise_cuts,
        coalesce(ps1.passes_ps1_cuts, false) as passes_ps1_cuts,
        coalesce(sdss.passes_sdss_cuts, false) as passes_sdss_cuts
    from features as f
    inner join gaia_src as g on g.source_id = f.source_id
left join tmass_features as tmass on tmass.source_id = f.source_id
left join allwise_features as allwise on allwise.source_id = f.source_id
left join ps1_features as ps1 on ps1.source_id = f.source_id
left join sdss_features as sdss on sdss.source_id = f.source_id
)

select * from final
