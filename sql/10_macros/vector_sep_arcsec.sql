-- Angle between two (not necessarily unit) vectors a and b, in arcsec:
-- atan2(|a x b|, a . b), accurate at all separations (acos of the dot product loses
-- precision below ~1 arcsec).
create or replace macro vector_sep_arcsec(a1, a2, a3, b1, b2, b3) as
    degrees(atan2(
        sqrt((a2 * b3 - a3 * b2) ^ 2 + (a3 * b1 - a1 * b3) ^ 2 + (a1 * b2 - a2 * b1) ^ 2),
        a1 * b1 + a2 * b2 + a3 * b3
    )) * 3600.0;
