-- Materialised Gaia x ps1 crossmatch (the macro xm_gaia_survey on ps1_positions), refreshed
-- by ingest and by `stellardb xmatch`: one row per matched ps1 source, its nearest Gaia
-- source within settings.ps1_match_radius_arcsec at the row's epoch.
create table if not exists xmatch_ps1 (
    ps1_objid bigint not null,
    gaia_source_id bigint not null,
    sep_arcsec double not null,
    n_candidates integer not null,
    dt_yr double
);
