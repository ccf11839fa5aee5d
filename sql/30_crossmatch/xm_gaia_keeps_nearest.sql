-- The second half of the crossmatch (xm_gaia_survey): of the survey rows that chose the
-- same Gaia source as their nearest (xm_nearest_gaia), the Gaia source keeps only the
-- nearest (ties to the smaller object_id); the others stay unmatched.  `pairs` names a
-- table or CTE of xm_nearest_gaia rows.  The cluster crossmatch runs it per Gaia partition
-- on every pair whose Gaia source lies there, wherever the survey row was.
create or replace macro xm_gaia_keeps_nearest(pairs) as table
select * from query_table(pairs)
qualify row_number() over (partition by gaia_source_id order by sep_arcsec, object_id) = 1
