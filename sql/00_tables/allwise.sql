-- AllWISE Source Catalog (allwise_p3as_psd), the columns stellardb keeps (IRSA's names).
-- ra/dec deg (ICRS), sigra/sigdec arcsec; the positions average 2010.0-2011.1, and
-- w1mjdmean (MJD), where a file has it, is the mean epoch of the W1 exposures.
-- w?mpro mag (Vega, profile-fit).  S/N < 2 gives a 95 % upper limit in w?mpro with
-- w?sigmpro NULL and "U" in ph_qual (W1..W4 order).
create table if not exists allwise (
    ----------  ids
    cntr bigint not null,
    designation varchar,
    ----------  astrometry
    ra double not null,
    dec double not null,
    sigra float,
    sigdec float,
    w1mjdmean double,
    ----------  photometry
    w1mpro float,
    w1sigmpro float,
    w2mpro float,
    w2sigmpro float,
    w3mpro float,
    w3sigmpro float,
    w4mpro float,
    w4sigmpro float,
    ph_qual varchar,
    cc_flags varchar,
    ext_flg smallint,
    ----------  stellardb: nested HEALPix order 12 of (ra, dec), provenance
    healpix_12 bigint not null,
    ingest_id integer not null
);
