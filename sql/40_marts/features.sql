-- The seed's 27 network inputs for every Gaia source (docs/catalogues.md), NULL where
-- missing, and whether the star passes the feature-level quality cuts.
-- Absolute magnitude M = m - 5 log10(r_med_geo / 10 pc).  SkyMapper extinction
-- A_band = R_band * ebmv_sfd with R = u 4.294, v 4.026, g 2.986, r 2.288, i 1.588,
-- z 1.206 (Wolf et al. 2018).  SFD E(B-V) is the whole line of sight and
-- over-corrects nearby stars, so the reddened (_nored) magnitudes are kept too.
-- GSP-Phot gives 16th/84th percentiles, not errors: _err = (upper - lower) / 2.
create or replace view features as
with

stars_dm as (
    select
        stars.*,
        5.0 * log10(r_med_geo / 10.0) as distance_modulus_mag
    from stars
),

final as (
    select
        source_id,
        ----------  Gaia and distance
        r_med_geo::double as r_med_geo,
        phot_bp_mean_mag::double as phot_bp_mean_mag,
        phot_rp_mean_mag::double as phot_rp_mean_mag,
        ----------  absolute SkyMapper magnitudes, de-reddened with ebmv_sfd
        u_psf - distance_modulus_mag - 4.294 * ebmv_sfd as uabs,
        v_psf - distance_modulus_mag - 4.026 * ebmv_sfd as vabs,
        g_psf - distance_modulus_mag - 2.986 * ebmv_sfd as gabs,
        r_psf - distance_modulus_mag - 2.288 * ebmv_sfd as rabs,
        i_psf - distance_modulus_mag - 1.588 * ebmv_sfd as iabs,
        z_psf - distance_modulus_mag - 1.206 * ebmv_sfd as zabs,
        ----------  the same, not de-reddened
        u_psf - distance_modulus_mag as uabs_nored,
        v_psf - distance_modulus_mag as vabs_nored,
        g_psf - distance_modulus_mag as gabs_nored,
        r_psf - distance_modulus_mag as rabs_nored,
        i_psf - distance_modulus_mag as iabs_nored,
        z_psf - distance_modulus_mag as zabs_nored,
        ----------  SkyMapper errors (mag)
        e_u_psf::double as e_u_psf,
        e_v_psf::double as e_v_psf,
        e_g_psf::double as e_g_psf,
        e_r_psf::double as e_r_psf,
        e_i_psf::double as e_i_psf,
        e_z_psf::double as e_z_psf,
        ----------  Gaia GSP-Phot
        teff_gspphot::double as teff_gspphot,
        logg_gspphot::double as logg_gspphot,
        mh_gspphot::double as mh_gspphot,
        (teff_gspphot_upper - teff_gspphot_lower)::double / 2.0 as teff_gspphot_err,
        (logg_gspphot_upper - logg_gspphot_lower)::double / 2.0 as logg_gspphot_err,
        (mh_gspphot_upper - mh_gspphot_lower)::double / 2.0 as mh_gspphot_err,
        ----------  the seed's cuts: BP and RP present, G <= 18, distance present,
        ----------  at most two of the six SkyMapper magnitudes missing
        coalesce(
            phot_bp_mean_mag is not null
            and phot_rp_mean_mag is not null
            and phot_g_mean_mag <= 18.0
            and r_med_geo is not null
            and (u_psf is null)::int + (v_psf is null)::int + (g_psf is null)::int
            + (r_psf is null)::int + (i_psf is null)::int + (z_psf is null)::int <= 2,
            false
        ) as passes_feature_cuts
    from stars_dm
)

select * from final
