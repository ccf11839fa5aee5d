-- Predictions of a trained model for every star that passes the feature cuts.
-- teff K, logg log(cm/s^2), feh dex; *_err are 1-sigma per-star uncertainties.
create table if not exists predictions (
    source_id bigint not null,
    teff double,
    teff_err double,
    logg double,
    logg_err double,
    feh double,
    feh_err double,
    model varchar not null,
    scored_at timestamp not null
);
