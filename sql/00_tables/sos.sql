-- Spectroscopic reference labels from any survey (Survey of Surveys schema).
-- A row is keyed by (survey, source_id) or, for catalogues without Gaia ids (PASTEL),
-- by (survey, ra, dec) with positions at ref_epoch (Julian year; J2000 for PASTEL).
-- teff K, logg log(cm/s^2), feh dex; e_* are 1-sigma errors as the survey gives them.
create table if not exists sos (
    survey varchar not null,
    source_id bigint,
    ra double,
    dec double,
    ref_epoch double,
    teff double,
    e_teff double,
    logg double,
    e_logg double,
    feh double,
    e_feh double,
    ----------  stellardb: HEALPix order 12 (from source_id, else from ra/dec), provenance
    healpix_12 bigint,
    ingest_id integer not null
);
