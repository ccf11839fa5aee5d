-- The sky cut into cells for crossmatching (the Zones algorithm: Gray, Nieto-Santisteban
-- & Szalay 2006, "The Zones Algorithm for Finding Points-Near-a-Point or Cross-Matching
-- Spatial Datasets", MSR-TR-2006-52): declination zones of height zone_cell_deg(), each
-- cut in RA into buckets at least zone_cell_deg() wide on the sky, so that a disk of
-- radius r touches a known, small set of cells.  Candidate pairs then come from a hash
-- join on one integer cell key.  Exact across RA 0/360 (bucket numbers wrap) and at the
-- poles (the polar zones are a single bucket).  30 arcsec: most sources reach one cell
-- for a 1 arcsec match, and a cell holds few sources even in the Galactic plane.
create or replace macro zone_cell_deg() as 30.0 / 3600.0;
