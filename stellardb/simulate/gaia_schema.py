"""Gaia DR3 ``gaia_source`` columns written by the simulator.

Names, datatypes, units (spelled as the archive spells them), UCDs and
descriptions are Gaia DR3's own, as published in the archive's ECSV headers
(checked against the real 153-column ``gaia_source`` rows of
``tests/data/real/gaia_dr3_fixture_5rows.ecsv``).  The simulator writes this
subset, in archive order: everything stellardb uses plus the usual companions.
"""

from __future__ import annotations

# (name, ECSV datatype, unit, ucd, description)
GAIA_SOURCE_COLUMNS: list[tuple[str, str, str, str, str]] = [
    ("solution_id", "int64", "", "meta.version", "Solution Identifier"),
    ("designation", "string", "", "meta.id;meta.main", "Unique source designation (unique across all Data Releases)"),
    ("source_id", "int64", "", "meta.id", "Unique source identifier (unique within a particular Data Release)"),
    ("random_index", "int64", "", "meta.code", "Random index for use when selecting subsets"),
    ("ref_epoch", "float64", "yr", "meta.ref;time.epoch", "Reference epoch"),
    ("ra", "float64", "deg", "pos.eq.ra;meta.main", "Right ascension"),
    ("ra_error", "float32", "mas", "stat.error;pos.eq.ra", "Standard error of right ascension"),
    ("dec", "float64", "deg", "pos.eq.dec;meta.main", "Declination"),
    ("dec_error", "float32", "mas", "stat.error;pos.eq.dec", "Standard error of declination"),
    ("parallax", "float64", "mas", "pos.parallax.trig", "Parallax"),
    ("parallax_error", "float32", "mas", "stat.error;pos.parallax.trig", "Standard error of parallax"),
    ("parallax_over_error", "float32", "", "stat.snr;pos.parallax.trig", "Parallax divided by its standard error"),
    ("pm", "float32", "mas.yr**-1", "pos.pm;pos.eq", "Total proper motion"),
    ("pmra", "float64", "mas.yr**-1", "pos.pm;pos.eq.ra", "Proper motion in right ascension direction"),
    ("pmra_error", "float32", "mas.yr**-1", "stat.error;pos.pm;pos.eq.ra", "Standard error of proper motion in right ascension direction"),
    ("pmdec", "float64", "mas.yr**-1", "pos.pm;pos.eq.dec", "Proper motion in declination direction"),
    ("pmdec_error", "float32", "mas.yr**-1", "stat.error;pos.pm;pos.eq.dec", "Standard error of proper motion in declination direction"),
    ("astrometric_params_solved", "int16", "", "meta.number", "Which parameters have been solved for?"),
    ("ruwe", "float32", "", "stat.error", "Renormalised unit weight error"),
    ("phot_g_n_obs", "int16", "", "meta.number", "Number of observations contributing to G photometry"),
    ("phot_g_mean_flux", "float64", "'electron'.s**-1", "phot.flux;em.opt", "G-band mean flux"),
    ("phot_g_mean_flux_error", "float32", "'electron'.s**-1", "stat.error;phot.flux;em.opt", "Error on G-band mean flux"),
    ("phot_g_mean_flux_over_error", "float32", "", "stat.snr;phot.flux;em.opt", "G-band mean flux divided by its error"),
    ("phot_g_mean_mag", "float32", "mag", "phot.mag;em.opt", "G-band mean magnitude"),
    ("phot_bp_n_obs", "int16", "", "meta.number", "Number of observations contributing to BP photometry"),
    ("phot_bp_mean_flux", "float64", "'electron'.s**-1", "phot.flux;em.opt.B", "Integrated BP mean flux"),
    ("phot_bp_mean_flux_error", "float32", "'electron'.s**-1", "stat.error;phot.flux;em.opt.B", "Error on the integrated BP mean flux"),
    ("phot_bp_mean_flux_over_error", "float32", "", "stat.snr;phot.flux;em.opt.B", "Integrated BP mean flux divided by its error"),
    ("phot_bp_mean_mag", "float32", "mag", "phot.mag;em.opt.B", "Integrated BP mean magnitude"),
    ("phot_rp_n_obs", "int16", "", "meta.number", "Number of observations contributing to RP photometry"),
    ("phot_rp_mean_flux", "float64", "'electron'.s**-1", "phot.flux;em.opt.R", "Integrated RP mean flux"),
    ("phot_rp_mean_flux_error", "float32", "'electron'.s**-1", "stat.error;phot.flux;em.opt.R", "Error on the integrated RP mean flux"),
    ("phot_rp_mean_flux_over_error", "float32", "", "stat.snr;phot.flux;em.opt.R", "Integrated RP mean flux divided by its error"),
    ("phot_rp_mean_mag", "float32", "mag", "phot.mag;em.opt.R", "Integrated RP mean magnitude"),
    ("phot_bp_rp_excess_factor", "float32", "", "arith.factor;phot.flux;em.opt", "BP/RP excess factor"),
    ("bp_rp", "float32", "mag", "phot.color;em.opt.B;em.opt.R", "BP - RP colour"),
    ("bp_g", "float32", "mag", "phot.color;em.opt.B;em.opt", "BP - G colour"),
    ("g_rp", "float32", "mag", "phot.color;em.opt;em.opt.R", "G - RP colour"),
    ("phot_variable_flag", "string", "", "meta.code;src.var", "Photometric variability flag"),
    ("l", "float64", "deg", "pos.galactic.lon", "Galactic longitude"),
    ("b", "float64", "deg", "pos.galactic.lat", "Galactic latitude"),
    ("ecl_lon", "float64", "deg", "pos.ecliptic.lon", "Ecliptic longitude"),
    ("ecl_lat", "float64", "deg", "pos.ecliptic.lat", "Ecliptic latitude"),
    ("has_xp_continuous", "bool", "", "meta.code.status", "Flag indicating the availability of mean BP/RP spectrum in continuous representation for this source"),
    ("teff_gspphot", "float32", "K", "phys.temperature.effective", "Effective temperature from GSP-Phot Aeneas best library using BP/RP spectra"),
    ("teff_gspphot_lower", "float32", "K", "phys.temperature.effective;stat.min", "Lower confidence level (16%) of effective temperature from GSP-Phot Aeneas best library using BP/RP spectra"),
    ("teff_gspphot_upper", "float32", "K", "phys.temperature.effective;stat.max", "Upper confidence level (84%) of effective temperature from GSP-Phot Aeneas best library using BP/RP spectra"),
    ("logg_gspphot", "float32", "log(cm.s**-2)", "phys.gravity", "Surface gravity from GSP-Phot Aeneas best library using BP/RP spectra"),
    ("logg_gspphot_lower", "float32", "log(cm.s**-2)", "phys.gravity;stat.min", "Lower confidence level (16%) of surface gravity from GSP-Phot Aeneas best library using BP/RP spectra"),
    ("logg_gspphot_upper", "float32", "log(cm.s**-2)", "phys.gravity;stat.max", "Upper confidence level (84%) of surface gravity from GSP-Phot Aeneas best library using BP/RP spectra"),
    ("mh_gspphot", "float32", "'dex'", "phys.abund.Z", "Iron abundance from GSP-Phot Aeneas best library using BP/RP spectra"),
    ("mh_gspphot_lower", "float32", "'dex'", "phys.abund.Z;stat.min", "Lower confidence level (16%) of iron abundance from GSP-Phot Aeneas best library using BP/RP spectra"),
    ("mh_gspphot_upper", "float32", "'dex'", "phys.abund.Z;stat.max", "Upper confidence level (84%) of iron abundance from GSP-Phot Aeneas best library using BP/RP spectra"),
    ("distance_gspphot", "float32", "pc", "pos.distance;pos.eq", "Distance from GSP-Phot Aeneas best library using BP/RP spectra"),
    ("distance_gspphot_lower", "float32", "pc", "pos.distance;pos.eq", "Lower confidence level (16%) of distance from GSP-Phot Aeneas best library using BP/RP spectra"),
    ("distance_gspphot_upper", "float32", "pc", "pos.distance;pos.eq", "Upper confidence level (84%) of distance from GSP-Phot Aeneas best library using BP/RP spectra"),
    ("azero_gspphot", "float32", "mag", "phys.absorption;em.opt", "Monochromatic extinction $A_0$ at 547.7nm from GSP-Phot Aeneas best library using BP/RP spectra"),
    ("azero_gspphot_lower", "float32", "mag", "phys.absorption;em.opt", "Lower confidence level (16%) of monochromatic extinction $A_0$ at 547.7nm from GSP-Phot Aeneas best library using BP/RP spectra"),
    ("azero_gspphot_upper", "float32", "mag", "phys.absorption;em.opt", "Upper confidence level (84%) of monochromatic extinction $A_0$ at 547.7nm from GSP-Phot Aeneas best library using BP/RP spectra"),
    ("ag_gspphot", "float32", "mag", "phys.absorption;em.opt", "Extinction in G band from GSP-Phot Aeneas best library using BP/RP spectra"),
    ("ag_gspphot_lower", "float32", "mag", "phys.absorption;em.opt", "Lower confidence level (16%) of extinction in G band from GSP-Phot Aeneas best library using BP/RP spectra"),
    ("ag_gspphot_upper", "float32", "mag", "phys.absorption;em.opt", "Upper confidence level (84%) of extinction in G band from GSP-Phot Aeneas best library using BP/RP spectra"),
    ("ebpminrp_gspphot", "float32", "mag", "phot.color.excess", "Reddening $E(G_{\\rm BP} - G_{\\rm RP})$ from GSP-Phot Aeneas best library using BP/RP spectra"),
    ("ebpminrp_gspphot_lower", "float32", "mag", "phot.color.excess;stat.min", "Lower confidence level (16%) of reddening  $E(G_{\\rm BP} - G_{\\rm RP})$ from GSP-Phot Aeneas best library using BP/RP spectra"),
    ("ebpminrp_gspphot_upper", "float32", "mag", "phot.color.excess;stat.max", "Upper confidence level (84%) of reddening  $E(G_{\\rm BP} - G_{\\rm RP})$ from GSP-Phot Aeneas best library using BP/RP spectra"),
    ("libname_gspphot", "string", "", "meta.note", "Name of library that achieves the highest mean log-posterior in MCMC samples and was used to derive GSP-Phot parameters in this table"),
]

GAIA_COLUMN_NAMES = [c[0] for c in GAIA_SOURCE_COLUMNS]
GAIA_DATATYPES = {c[0]: c[1] for c in GAIA_SOURCE_COLUMNS}
GAIA_UNITS = {c[0]: c[2] for c in GAIA_SOURCE_COLUMNS if c[2]}

#: DR3 ``solution_id`` of gaia_source rows.
GAIA_DR3_SOLUTION_ID = 1636148068921376768
#: DR3 photometric zero points (Vega), Riello et al. 2021, table 3: mag = -2.5 log10(flux) + ZP.
GAIA_DR3_ZP = {"G": 25.6874, "bp": 25.3385, "rp": 24.7479}
