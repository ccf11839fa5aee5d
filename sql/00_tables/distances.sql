-- Bailer-Jones et al. (2021) distances, archive spelling (external.gaiaedr3_distance), pc.
-- The 16th/84th percentiles are r_lo_* and r_hi_*.
create table if not exists distances (
    source_id bigint not null,
    r_med_geo float,
    r_lo_geo float,
    r_hi_geo float,
    r_med_photogeo float,
    r_lo_photogeo float,
    r_hi_photogeo float,
    flag varchar,
    ----------  stellardb: HEALPix order 12 from source_id, provenance
    healpix_12 bigint not null,
    ingest_id integer not null
);
