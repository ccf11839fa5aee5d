-- z component of the unit vector of (lon, lat) in degrees; see sky_x.
create or replace macro sky_z(lon_deg, lat_deg) as sin(radians(lat_deg));
