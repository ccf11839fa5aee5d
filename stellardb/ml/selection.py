"""Which model predicts each star: the most accurate among those whose inputs it has.

A *family* is the models one ``stellardb train --model NAME`` fits, one per feature set
(``NAME.gaia``, ``NAME.gaia-tmass-allwise``, ...), recorded in ``NAME.family.json``
beside their folders.  ``stellardb score --model NAME`` gives each star one of them:

* a star's *pattern* is the set of members whose inputs it has;
* for each pattern, the members are compared on the validation stars with exactly that
  pattern (the stars the choice will predict), by the mean over Teff, log g and [Fe/H]
  of the MAD of (prediction - reference) in units of 100 K, 0.1 dex and 0.1 dex; the
  best one predicts every star of that pattern;
* a pattern with fewer than :data:`MIN_VALIDATION_STARS` such stars (counting those
  with each parameter's label) is compared on the validation stars that have the inputs
  of *all* its members (richer patterns too), and with fewer than that falls back to the
  members' own validation scores.

So on the validation stars of each pattern with enough of them, the chosen prediction is
at least as good as any other member's those stars could have had: there a richer model
is chosen only where it beat the simpler ones on the stars it will predict (the two
fallbacks give no such guarantee).  Pooled over several patterns a MAD can still come out
a little worse, since MADs do not add; ``bench/bench_feature_sets.py`` checks the pooled
figure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from stellardb.catalog.db import quote_literal
from stellardb.errors import UserError
from stellardb.ml.features import PARAMETERS

MIN_VALIDATION_STARS = 30
FAMILY_SUFFIX = ".family.json"


def family_path(root: Path, name: str) -> Path:
    return Path(root) / f"{name}{FAMILY_SUFFIX}"


def member_name(family: str, feature_set: str) -> str:
    return f"{family}.{feature_set}"


def score_of(predictions: dict, labels: dict, units: dict, rows) -> tuple[float | None, dict]:
    """Mean over parameters of MAD(prediction - label)/unit on ``rows``; and the MADs."""
    mads = {}
    for p in PARAMETERS:
        value = predictions[p][rows]
        ref = labels[p][rows]
        ok = np.isfinite(value) & np.isfinite(ref)
        if ok.sum() == 0:
            return None, {}
        r = value[ok] - ref[ok]
        mads[p] = float(np.median(np.abs(r - np.median(r))))
    return float(np.mean([mads[p] / units[p] for p in PARAMETERS])), mads


def _labelled(labels: dict, rows) -> int:
    """The fewest stars among ``rows`` with a finite label of any one parameter."""
    return min(int(np.count_nonzero(np.isfinite(labels[p][rows]))) for p in PARAMETERS)


def choose(members: list[dict], eligible: np.ndarray, predictions: list[dict], labels: dict, units: dict) -> list[dict]:
    """The member that predicts each pattern.

    Parameters
    ----------
    members : list of dict
        ``{"feature_set", "score"}`` per member (``score``: its own validation score), in order.
    eligible : bool array (n_validation_stars, n_members)
        Which members' inputs each validation star has.
    predictions : list of {parameter: array (n_validation_stars,)}
        Each member's predictions of the validation stars (NaN where it has no inputs).
    labels : {parameter: array}
        The stars' reference labels.
    """
    k = len(members)
    fallback = sorted(range(k), key=lambda j: (members[j]["score"] is None, members[j]["score"] or 0.0))
    if eligible.shape != (eligible.shape[0], k):
        raise ValueError(f"eligible must have one column per member ({k}), got shape {eligible.shape}")
    choices = []
    for bits in sorted({tuple(row) for row in eligible.tolist()}, reverse=True):
        pattern = np.array(bits, dtype=bool)
        if not pattern.any():
            continue
        candidates = np.flatnonzero(pattern)
        # The stars this choice will predict are those with exactly this pattern: compare the
        # members on them.  Comparing on every star that has these inputs (richer patterns
        # included) let a pattern be chosen for by stars that another choice predicts.  Too
        # few of them (counting the stars with each parameter's label): the validation stars
        # that every member of the pattern can predict; too few of those: own scores.
        tiers = ((np.all(eligible == pattern, axis=1), "compared on the validation stars with exactly these inputs"),
                 (np.all(eligible[:, pattern], axis=1),
                  "compared on the validation stars with all these inputs (and perhaps more)"))
        scored = []
        for rows, how in tiers:
            if _labelled(labels, rows) < MIN_VALIDATION_STARS:
                continue
            for j in candidates:
                score, mads = score_of(predictions[j], labels, units, rows)
                if score is not None:
                    scored.append((score, j, mads))
            if scored:
                break
        if scored:
            score, best, mads = min(scored)
        else:
            best = next(j for j in fallback if pattern[j])
            score, mads = members[best]["score"], {}
            labelled = _labelled(labels, rows)
            how = (f"{labelled} validation stars with all these inputs and every label, fewer than "
                   f"{MIN_VALIDATION_STARS}: the members' own scores" if labelled < MIN_VALIDATION_STARS else
                   "no member could be scored on the validation stars with all these inputs: the members' own scores")
        choices.append({
            "eligible": [members[j]["feature_set"] for j in candidates],
            "chosen": members[best]["feature_set"],
            "n_validation": int(rows.sum()),
            "score": score,
            "mad": mads,
            "compared": {members[j]["feature_set"]: s for s, j, _ in scored},
            "how": how,
        })
    return choices


def fallback_order(members: list[dict]) -> list[str]:
    """Feature sets by their own validation score, best first (for patterns no validation star has)."""
    return [m["feature_set"] for m in sorted(members, key=lambda m: (m["score"] is None, m["score"] or 0.0))]


def chosen_sql(members: list[dict], choices: list[dict]) -> str:
    """SQL (on all_features) giving each star's chosen feature set, NULL where no member fits: the
    choice of its pattern, else (a pattern no validation star had) the best-scored member it fits."""
    from stellardb.ml.feature_sets import parse

    where = {m["feature_set"]: f"({parse(m['feature_set']).where})" for m in members}
    arms = []
    for c in choices:
        tests = [where[m["feature_set"]] if m["feature_set"] in c["eligible"] else f"not {where[m['feature_set']]}"
                 for m in members]
        arms.append(f"when {' and '.join(tests)} then {quote_literal(c['chosen'])}")
    arms += [f"when {where[name]} then {quote_literal(name)}" for name in fallback_order(members)]
    return "case " + " ".join(arms) + " end"


def write_family(root: Path, card: dict) -> Path:
    """Write the family card atomically (a reader sees the old one or the new one)."""
    path = family_path(root, card["name"])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_family(root: Path, name: str) -> dict | None:
    """The family card of ``name``, or None when ``name`` is no family."""
    path = family_path(root, name)
    if not path.is_file():
        return None
    from stellardb.ml.feature_sets import parse

    try:
        card = json.loads(path.read_text())
        members = card["members"]
        sets = {m["feature_set"] for m in members}
        for m in members:
            # a member is this family's model of a known feature set: nothing else reaches SQL
            if parse(m["feature_set"]).name != m["feature_set"] or m["model"] != member_name(name, m["feature_set"]):
                raise ValueError(f"member {m['model']!r}")
        for c in card["choices"]:
            if c["chosen"] not in sets or not set(c["eligible"]) <= sets or c["chosen"] not in c["eligible"]:
                raise ValueError(f"choice {c['chosen']!r}")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{path} is corrupt ({exc.__class__.__name__}: {str(exc)[:80]}); retrain with "
                        f"`stellardb train --model {name}`.") from None
    return card
