-- Materialised Gaia x sdss crossmatch (the macro xm_gaia_survey on sdss_positions), refreshed
-- by ingest and by `stellardb xmatch`: one row per matched sdss source, its nearest Gaia
-- source within settings.sdss_match_radius_arcsec at the row's epoch.
create table if not exists xmatch_sdss (
    sdss_objid bigint not null,
    gaia_source_id bigint not null,
    sep_arcsec double not null,
    n_candidates integer not null,
    dt_yr double
);
