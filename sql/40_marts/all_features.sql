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
        tmass_f.j_m,
        tmass_f.j_msigcom,
        tmass_f.h_m,
        tmass_f.h_msigcom,
        tmass_f.k_m,
        tmass_f.k_msigcom,
        ----------  AllWISE Source Catalog (allwise_features)
        allwise_f.w1mpro,
        allwise_f.w1sigmpro,
        allwise_f.w2mpro,
        allwise_f.w2sigmpro,
        allwise_f.w3mpro,
        allwise_f.w3sigmpro,
        allwise_f.w4mpro,
        allwise_f.w4sigmpro,
        ----------  Pan-STARRS1 DR2 mean object photometry (ObjectThin + MeanObject) (ps1_features)
        ps1_f.gMeanPSFMag,
        ps1_f.gMeanPSFMagErr,
        ps1_f.rMeanPSFMag,
        ps1_f.rMeanPSFMagErr,
        ps1_f.iMeanPSFMag,
        ps1_f.iMeanPSFMagErr,
        ps1_f.zMeanPSFMag,
        ps1_f.zMeanPSFMagErr,
        ps1_f.yMeanPSFMag,
        ps1_f.yMeanPSFMagErr,
        ----------  SDSS DR17 PhotoObj (primary photometry) (sdss_features)
        sdss_f.psfMag_u,
        sdss_f.psfMagErr_u,
        sdss_f.psfMag_g,
        sdss_f.psfMagErr_g,
        sdss_f.psfMag_r,
        sdss_f.psfMagErr_r,
        sdss_f.psfMag_i,
        sdss_f.psfMagErr_i,
        sdss_f.psfMag_z,
        sdss_f.psfMagErr_z,
        ----------  which inputs the star has
        coalesce(
            f.phot_bp_mean_mag is not null and f.phot_rp_mean_mag is not null
            and g.phot_g_mean_mag is not null and f.r_med_geo is not null,
            false
        ) as passes_gaia_cuts,
        f.passes_feature_cuts as passes_skymapper_cuts,
        coalesce(tmass_f.passes_tmass_cuts, false) as passes_tmass_cuts,
        coalesce(allwise_f.passes_allwise_cuts, false) as passes_allwise_cuts,
        coalesce(ps1_f.passes_ps1_cuts, false) as passes_ps1_cuts,
        coalesce(sdss_f.passes_sdss_cuts, false) as passes_sdss_cuts
    from features as f
    inner join gaia_src as g on g.source_id = f.source_id
    left join tmass_features as tmass_f on tmass_f.source_id = f.source_id
    left join allwise_features as allwise_f on allwise_f.source_id = f.source_id
    left join ps1_features as ps1_f on ps1_f.source_id = f.source_id
    left join sdss_features as sdss_f on sdss_f.source_id = f.source_id
)

select * from final
