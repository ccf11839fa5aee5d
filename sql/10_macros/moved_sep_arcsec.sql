-- Separation in arcsec between a source at p moving at v (gaia_motion: unit vector and
-- radians per year) seen dt_yr after its reference epoch, and the unit vector q.
create or replace macro moved_sep_arcsec(px, py, pz, vx, vy, vz, dt_yr, qx, qy, qz) as
    vector_sep_arcsec(px + dt_yr * vx, py + dt_yr * vy, pz + dt_yr * vz, qx, qy, qz);
