"""Feature sets: Gaia plus zero or more photometric surveys, one model each.

A star gets the prediction of the best model among those whose inputs it has
(:mod:`stellardb.ml.selection`), and ``predictions.feature_set`` says which.  Gaia's part
of every set is G, BP, RP, their errors, GSP-Phot's Teff, log g and [M/H] with their
errors, and the Bailer-Jones distance; a survey adds its bands and their errors, under
the survey's own column names (view ``all_features``).  The seed's Gaia + SkyMapper set
keeps the 27 inputs it was defined with (:data:`stellardb.ml.features.FEATURES`), and a set
with SkyMapper and other surveys is those 27 plus the other surveys' bands.

Plain Python and NumPy: the scorer and the service read this without Keras.
"""

from __future__ import annotations

from dataclasses import dataclass

from stellardb.catalog.surveys import SURVEYS
from stellardb.ml.features import FEATURES

#: Gaia DR3 and Bailer-Jones inputs of every feature set but the seed's
GAIA_FEATURES = (
    "r_med_geo",
    "phot_g_mean_mag",
    "phot_bp_mean_mag",
    "phot_rp_mean_mag",
    "phot_g_mean_mag_error",
    "phot_bp_mean_mag_error",
    "phot_rp_mean_mag_error",
    "teff_gspphot",
    "logg_gspphot",
    "mh_gspphot",
    "teff_gspphot_err",
    "logg_gspphot_err",
    "mh_gspphot_err",
)

SEED = "gaia-skymapper"


@dataclass(frozen=True)
class FeatureSet:
    name: str
    #: photometric surveys besides Gaia, in stellardb.catalog.surveys order
    surveys: tuple[str, ...]
    #: the model inputs, columns of all_features
    features: tuple[str, ...]

    @property
    def passes_columns(self) -> tuple[str, ...]:
        """Columns of all_features that must all be true for a star to use this set."""
        return ("passes_gaia_cuts", *(SURVEYS[s].passes_column for s in self.surveys))

    @property
    def where(self) -> str:
        """SQL condition on all_features: the star has this set's inputs."""
        return " and ".join(self.passes_columns)

    @property
    def description(self) -> str:
        if not self.surveys:
            return "Gaia (G, BP, RP, GSP-Phot) and the Bailer-Jones distance only"
        return "Gaia and the distance, with " + ", ".join(SURVEYS[s].title.split(" (")[0] for s in self.surveys)


def _survey_features(*surveys: str) -> tuple[str, ...]:
    return tuple(c for s in surveys for b in SURVEYS[s].bands for c in (b.mag, b.err))


def make(*surveys: str) -> FeatureSet:
    surveys = tuple(s for s in SURVEYS if s in surveys)  # the declared order
    name = "-".join(("gaia", *surveys))
    if "skymapper" in surveys:
        # SkyMapper enters as the seed defined it: its 27 inputs (absolute, de-reddened and not)
        return FeatureSet(name, surveys, tuple(FEATURES) + _survey_features(*(s for s in surveys if s != "skymapper")))
    return FeatureSet(name, surveys, GAIA_FEATURES + _survey_features(*surveys))


#: the sets `stellardb train` fits by default, each where enough labelled stars have its
#: inputs: Gaia alone (every star with BP, RP and a distance), each survey alone, the
#: infrared pair, and each optical survey with the infrared pair (what most stars north
#: of SkyMapper have).
DEFAULT_SETS = tuple(
    f.name for f in (
        make(),
        make("skymapper"),
        make("tmass"),
        make("allwise"),
        make("tmass", "allwise"),
        make("ps1"),
        make("sdss"),
        make("skymapper", "tmass", "allwise"),
        make("ps1", "tmass", "allwise"),
        make("sdss", "tmass", "allwise"),
    )
)


def parse(name: str) -> FeatureSet:
    """The feature set of a name such as ``gaia``, ``gaia-tmass-allwise``; ValueError otherwise."""
    parts = str(name).split("-")
    if not parts or parts[0] != "gaia" or len(set(parts)) != len(parts):
        raise ValueError(f"a feature set is gaia followed by surveys joined with '-' (e.g. gaia-tmass-allwise), "
                         f"got {name!r}")
    unknown = [p for p in parts[1:] if p not in SURVEYS]
    if unknown:
        raise ValueError(f"unknown survey {unknown[0]!r} in feature set {name!r}; surveys: {', '.join(SURVEYS)}")
    fs = make(*parts[1:])
    if fs.name != name:
        raise ValueError(f"write feature set {name!r} as {fs.name!r} (surveys in the order {', '.join(SURVEYS)})")
    return fs
