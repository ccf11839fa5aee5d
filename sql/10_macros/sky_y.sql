-- y component of the unit vector of (lon, lat) in degrees; see sky_x.
create or replace macro sky_y(lon_deg, lat_deg) as cos(radians(lat_deg)) * sin(radians(lon_deg));
