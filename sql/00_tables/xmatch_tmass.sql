-- Materialised Gaia x tmass crossmatch (the macro xm_gaia_survey on tmass_positions), refreshed
-- by ingest and by `stellardb xmatch`: one row per matched tmass source, its nearest Gaia
-- source within settings.tmass_match_radius_arcsec at the row's epoch.
create table if not exists xmatch_tmass (
    tmass_pts_key bigint not null,
    gaia_source_id bigint not null,
    sep_arcsec double not null,
    n_candidates integer not null,
    dt_yr double
);
