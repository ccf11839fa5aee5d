-- For each order-10 HEALPix pixel holding a Gaia source: the pixel itself and its
-- (usually 8) nested neighbours.  The crossmatch views copy each Gaia source into
-- these nine pixels, so every partner within one pixel width (about 100 arcsec at
-- order 10, far more than radius + proper motion x epoch difference) shares a
-- pixel with it, across pixel edges and corners, RA 0/360 and the poles.
create table if not exists healpix_neighbours (
    healpix_10 bigint not null,
    neighbour_10 bigint not null
);
