-- Materialised Gaia x SkyMapper crossmatch (the view xm_gaia_skymapper), refreshed by
-- ingest and by `stellardb xmatch`.
create table if not exists xmatch (
    skymapper_object_id bigint not null,
    gaia_source_id bigint not null,
    sep_arcsec double not null,
    n_candidates integer not null,
    dt_yr double
);
