-- Unit vector components of a sky position (lon, lat in degrees).  Crossmatching on
-- vectors instead of (ra, dec) differences stays exact across RA 0/360 and at the poles.
create or replace macro sky_x(lon_deg, lat_deg) as cos(radians(lat_deg)) * cos(radians(lon_deg));
