-- Julian epoch (e.g. 2016.0) of a Modified Julian Date: J2000.0 is MJD 51544.5.
create or replace macro mjd_to_jyear(mjd) as 2000.0 + (mjd - 51544.5) / 365.25;
