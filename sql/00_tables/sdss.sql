-- SDSS DR17 PhotoObj (primary detections), the columns stellardb keeps (CasJobs' names).
-- ra/dec deg (ICRS) at mjd (MJD of the imaging run); raErr/decErr arcsec; psfMag_?
-- asinh magnitudes (AB to a few hundredths); type 6 = star.  Rows whose clean flag is 0 (saturation,
-- edge or deblending problems) are stored without photometry.  CasJobs writes -9999
-- for a missing value; ingest stores NULL.
create table if not exists sdss (
    ----------  ids
    objID bigint not null,
    ----------  astrometry
    ra double not null,
    dec double not null,
    raErr float,
    decErr float,
    mjd double,
    ----------  flags
    type smallint,
    ----------  photometry
    psfMag_u float,
    psfMagErr_u float,
    psfMag_g float,
    psfMagErr_g float,
    psfMag_r float,
    psfMagErr_r float,
    psfMag_i float,
    psfMagErr_i float,
    psfMag_z float,
    psfMagErr_z float,
    ----------  stellardb: nested HEALPix order 12 of (ra, dec), provenance
    healpix_12 bigint not null,
    ingest_id integer not null
);
