-- Materialised Gaia x allwise crossmatch (the macro xm_gaia_survey on allwise_positions), refreshed
-- by ingest and by `stellardb xmatch`: one row per matched allwise source, its nearest Gaia
-- source within settings.allwise_match_radius_arcsec at the row's epoch.
create table if not exists xmatch_allwise (
    allwise_cntr bigint not null,
    gaia_source_id bigint not null,
    sep_arcsec double not null,
    n_candidates integer not null,
    dt_yr double
);
