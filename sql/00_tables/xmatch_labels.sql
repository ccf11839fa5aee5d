-- Materialised position-only labels x Gaia match (the view xm_labels_gaia).
create table if not exists xmatch_labels (
    survey varchar not null,
    label_ra double not null,
    label_dec double not null,
    gaia_source_id bigint not null,
    sep_arcsec double not null,
    n_candidates integer not null
);
