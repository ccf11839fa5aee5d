-- SkyMapper Southern Survey master table, the columns stellardb keeps (SkyMapper's names).
-- raj2000/dej2000 deg (ICRS) at the row's mean_epoch (MJD); e_raj2000/e_dej2000 arcsec;
-- *_psf magnitudes AB; ebmv_sfd mag (SFD E(B-V) over the whole line of sight).
create table if not exists skymapper (
    ----------  ids
    object_id bigint not null,
    ----------  astrometry
    raj2000 double not null,
    dej2000 double not null,
    e_raj2000 float,
    e_dej2000 float,
    mean_epoch double not null,
    ----------  flags
    flags integer,
    class_star float,
    ----------  photometry
    u_psf float,
    e_u_psf float,
    v_psf float,
    e_v_psf float,
    g_psf float,
    e_g_psf float,
    r_psf float,
    e_r_psf float,
    i_psf float,
    e_i_psf float,
    z_psf float,
    e_z_psf float,
    ebmv_sfd float,
    ----------  stellardb: nested HEALPix order 12 of (raj2000, dej2000), provenance
    healpix_12 bigint not null,
    ingest_id integer not null
);
