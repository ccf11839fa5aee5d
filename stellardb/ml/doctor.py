"""``stellardb doctor``: find and repair what an interrupted command left behind.

``train`` writes a model folder under a temporary name, swaps it into place, then
commits the model's metrics and a ``model_runs`` row holding the sha256 of its
card.json.  A ``kill -9`` between the swap and the commit leaves the new networks on
disk and the old model's metrics and predictions in the database, with the previous
folder still parked beside it as ``.NAME.old-*``.  Scratch folders ``.NAME.partial-*``
are left by a kill before the swap.

The database's record decides which folder is the model: a parked folder whose
card.json matches the recorded sha256 is put back; leftovers are removed.  ``score``
refuses a model whose card does not match the record (:func:`check_recorded`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from stellardb.errors import UserError


@dataclass
class Finding:
    model: str
    problem: str
    action: str  # what was done (or would be, with repair=False)


def recorded_card_sha(con, model: str) -> str | None:
    """sha256 of the card.json of the last committed training of ``model`` (None: none recorded)."""
    try:
        row = con.execute("select card_sha256 from model_runs where model = $m and command = 'train' "
                          "order by run_at desc limit 1", {"m": model}).fetchone()
    except Exception:  # noqa: BLE001 - a database from before model_runs
        return None
    return row[0] if row else None


def card_sha(folder: Path) -> str | None:
    path = folder / "card.json"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def check_recorded(con, model: str, folder: Path) -> None:
    """Refuse a model folder that is not the one the database recorded training (UserError)."""
    want = recorded_card_sha(con, model)
    if want is not None and card_sha(folder) != want:
        raise UserError(
            f"{folder} is not the model the database recorded for {model!r} (its card.json differs from the trained "
            f"one's sha256): a `stellardb train --model {model}` was interrupted. Run `stellardb doctor` to put the "
            f"recorded model back, or train it again."
        )


#: ``.NAME.partial-PID-xxxx`` / ``.NAME.old-PID-xxxx`` (train's temporary folders); the last
#: ``.old-``/``.partial-`` counts, so a model name may itself contain one
_TEMP = re.compile(r"^\.(?P<model>.+)\.(?P<kind>old|partial)-(?:(?P<pid>\d+)-)?(?P<tag>\w+)$")


def _alive(pid: str | None) -> bool | None:
    """Whether the train that made a folder still runs (None: the name has no PID)."""
    if pid is None:
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def diagnose(con, root: Path, repair: bool = True) -> list[Finding]:
    """Leftover and mismatched model folders under ``root``; repaired when ``repair``.

    Folders of a train that is still running (its PID is in their names) are left alone,
    and so is everything of that model.
    """
    findings = []
    if not root.is_dir():
        return findings
    parked: dict[str, list[Path]] = {}
    busy: set[str] = set()
    for entry in sorted(root.iterdir()):
        found = _TEMP.match(entry.name) if entry.is_dir() else None
        if found is None:
            continue
        model, kind, pid = found["model"], found["kind"], found["pid"]
        if _alive(pid):
            busy.add(model)
            continue
        children = [c for c in entry.iterdir() if c.is_dir()] if kind == "old" else []
        if len(children) == 1 and (children[0] / "card.json").is_file():
            parked.setdefault(children[0].name, []).append(children[0])
        elif pid is None:
            findings.append(Finding(model, f"temporary folder {entry} of an earlier train (no record of its process)",
                                    "left in place; remove it by hand if no train is running"))
        else:
            findings.append(Finding(model, f"scratch folder {entry} left by an interrupted train",
                                    "removed" if repair else "would be removed"))
            if repair:
                shutil.rmtree(entry, ignore_errors=True)
    models = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")} | set(parked)
    for model in sorted(models - busy):
        want = recorded_card_sha(con, model)
        folder = root / model
        if want is not None and card_sha(folder) != want:
            match = next((p for p in parked.get(model, []) if card_sha(p) == want), None)
            if match is not None:
                findings.append(Finding(model, f"{folder} holds networks the database never recorded (an interrupted "
                                               f"train); the recorded model was parked in {match.parent}",
                                        "put the recorded model back" if repair else "would put the recorded model back"))
                if repair:
                    if folder.exists():
                        shutil.rmtree(folder)
                    os.replace(match, folder)
                    shutil.rmtree(match.parent, ignore_errors=True)  # the emptied .NAME.old-* folder
            else:
                findings.append(Finding(model, f"{folder} does not match the model the database recorded, and no "
                                               "parked copy does", f"train it again: stellardb train --model {model}"))
        settled = want is not None and card_sha(folder) == want
        for p in parked.get(model, []):
            if not p.exists():
                continue
            if settled:
                findings.append(Finding(model, f"parked previous model {p.parent} left by an interrupted train",
                                        "removed" if repair else "would be removed"))
                if repair:
                    shutil.rmtree(p.parent, ignore_errors=True)
            else:  # without a record of which is right, nothing is thrown away
                findings.append(Finding(model, f"parked model {p.parent} left by an interrupted train; the database "
                                               "has no record to tell which copy is the model", "left in place"))
    return findings
