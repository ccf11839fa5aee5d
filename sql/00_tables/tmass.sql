-- 2MASS All-Sky Point Source Catalog (fp_psc), the columns stellardb keeps (IRSA's names).
-- ra/dec deg (ICRS) at the row's jdate (Julian Date of the observation, 1997-2001);
-- err_maj/err_min arcsec, err_ang deg; j_m/h_m/k_m mag (Vega).  An undetected band holds
-- a 95 % upper limit in *_m with *_msigcom NULL and "U" in ph_qual (J, H, Ks order).
create table if not exists tmass (
    ----------  ids
    pts_key bigint not null,
    designation varchar,
    ----------  astrometry
    ra double not null,
    dec double not null,
    err_maj float,
    err_min float,
    err_ang smallint,
    jdate double,
    ----------  photometry
    j_m float,
    j_msigcom float,
    h_m float,
    h_msigcom float,
    k_m float,
    k_msigcom float,
    ph_qual varchar,
    cc_flg varchar,
    ----------  stellardb: nested HEALPix order 12 of (ra, dec), provenance
    healpix_12 bigint not null,
    ingest_id integer not null
);
