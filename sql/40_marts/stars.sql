-- One row per Gaia DR3 source: Gaia astrometry, photometry and GSP-Phot, its
-- Bailer-Jones distance, its SkyMapper counterpart (table xmatch) and its reference
-- label if any.  Reference labels are *_ref so that they never shadow predictions.
create or replace view stars as
select
    ----------  Gaia DR3
    g.source_id,
    g.healpix_12,
    g.ra,
    g.dec,
    g.ref_epoch,
    g.parallax,
    g.parallax_error,
    g.pmra,
    g.pmdec,
    g.ruwe,
    g.phot_g_mean_mag,
    g.phot_bp_mean_mag,
    g.phot_rp_mean_mag,
    g.bp_rp,
    g.l,
    g.b,
    g.teff_gspphot,
    g.teff_gspphot_lower,
    g.teff_gspphot_upper,
    g.logg_gspphot,
    g.logg_gspphot_lower,
    g.logg_gspphot_upper,
    g.mh_gspphot,
    g.mh_gspphot_lower,
    g.mh_gspphot_upper,
    g.ag_gspphot,
    g.ebpminrp_gspphot,
    ----------  Bailer-Jones 2021 (pc)
    d.r_med_geo,
    d.r_lo_geo,
    d.r_hi_geo,
    d.r_med_photogeo,
    ----------  SkyMapper
    x.skymapper_object_id,
    x.sep_arcsec as xmatch_sep_arcsec,
    x.n_candidates as xmatch_n_candidates,
    s.mean_epoch as skymapper_mean_epoch,
    s.flags as skymapper_flags,
    s.class_star,
    s.u_psf,
    s.e_u_psf,
    s.v_psf,
    s.e_v_psf,
    s.g_psf,
    s.e_g_psf,
    s.r_psf,
    s.e_r_psf,
    s.i_psf,
    s.e_i_psf,
    s.z_psf,
    s.e_z_psf,
    s.ebmv_sfd,
    ----------  reference label
    l.survey as label_survey,
    l.teff as teff_ref,
    l.e_teff as e_teff_ref,
    l.logg as logg_ref,
    l.e_logg as e_logg_ref,
    l.feh as feh_ref,
    l.e_feh as e_feh_ref
from gaia_src as g
left join distances_src as d on d.source_id = g.source_id
left join xmatch_src as x on x.gaia_source_id = g.source_id
left join skymapper_src as s on s.object_id = x.skymapper_object_id
left join best_labels as l on l.source_id = g.source_id
