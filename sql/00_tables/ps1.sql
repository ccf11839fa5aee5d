-- Pan-STARRS1 DR2 mean photometry (ObjectThin joined with MeanObject), the columns
-- stellardb keeps (MAST's names; DuckDB matches them without regard to case).
-- raMean/decMean deg (ICRS) at epochMean (MJD); raMeanErr/decMeanErr arcsec;
-- ?MeanPSFMag mag (AB).  MAST writes -999 for a missing value; ingest stores NULL.
create table if not exists ps1 (
    ----------  ids
    objID bigint not null,
    ----------  astrometry
    raMean double not null,
    decMean double not null,
    raMeanErr float,
    decMeanErr float,
    epochMean double,
    nDetections smallint,
    ----------  photometry
    gMeanPSFMag float,
    gMeanPSFMagErr float,
    rMeanPSFMag float,
    rMeanPSFMagErr float,
    iMeanPSFMag float,
    iMeanPSFMagErr float,
    zMeanPSFMag float,
    zMeanPSFMagErr float,
    yMeanPSFMag float,
    yMeanPSFMagErr float,
    ----------  stellardb: nested HEALPix order 12 of (raMean, decMean), provenance
    healpix_12 bigint not null,
    ingest_id integer not null
);
