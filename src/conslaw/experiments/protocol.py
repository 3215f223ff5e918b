"""What every experiment shares: the claim rows and their pass thresholds, the exponent fit, the run cache.

The run cache (:class:`RunCache`) is content-addressed: a run is reused only when the hash of
everything that determines it matches and its record validates (see :class:`RunCache`).

A claim is a row {claim, paper, measured, pass}. The exponent claims of the
paper's SGD figures (Prop 5.1, Fig 1, Fig 5) say: the final relative error of a
conserved function grows like lr^2, that of a non-conserved control like lr.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..flows import fit_exponent
from ..io import atomic_write, dumps_json, json_safe

#: a fitted exponent passes when within this distance of the paper's (2 for a law, 1 for a control)
EXPONENT_TOLERANCE = 0.3

__all__ = ["EXPONENT_TOLERANCE", "RunCache", "RunSchema", "claim", "conslaw_version", "exponent_claims",
           "fit_exponent", "run_key"]


def claim(text: str, paper: str, measured: str, passed: bool) -> dict:
    """One row of a claims table."""
    return {"claim": text, "paper": paper, "measured": measured, "pass": bool(passed)}


def exponent_claims(law_claim: str, control_claim: str, p_law: float, p_control: float) -> list[dict]:
    """The two exponent claims: law error ~ lr^2, control ~ lr (each within :data:`EXPONENT_TOLERANCE`)."""
    return [claim(law_claim, "exponent 2", f"{p_law:.2f}", abs(p_law - 2.0) <= EXPONENT_TOLERANCE),
            claim(control_claim, "exponent 1", f"{p_control:.2f}", abs(p_control - 1.0) <= EXPONENT_TOLERANCE)]


#: the format tag of a run record (bump it when the record's layout changes)
RUN_FORMAT = "conslaw-run/1"


def conslaw_version() -> str:
    """The installed conslaw version (part of every run's key: a new version recomputes)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("conslaw")
    except PackageNotFoundError:
        return "unknown"


def canonical(data) -> str:
    """Canonical JSON (sorted keys, no spaces, non-finite numbers as null): the text that is hashed."""
    return json.dumps(json_safe(data), sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)


def run_key(inputs: dict) -> str:
    """SHA-256 of the canonical JSON of everything that determines a run."""
    return hashlib.sha256(canonical(inputs).encode()).hexdigest()


@dataclass(frozen=True)
class RunSchema:
    """What a run record must hold: scalar keys with their types, list keys of numbers with their lengths.

    Args:
        scalars: key -> type (or tuple of types) of the value.
        lists: key -> required length of a list of numbers (or nulls, written for NaN).
    """

    scalars: dict
    lists: dict

    def problems(self, result) -> list[str]:
        """What is wrong with ``result`` (empty when it is valid)."""
        if not isinstance(result, dict):
            return [f"the result is {type(result).__name__}, not an object"]
        found = []
        for key, kind in self.scalars.items():
            value = result.get(key)
            # bool is an int in Python: accept it only where a bool is asked for
            if key not in result or not isinstance(value, kind) or \
                    (isinstance(value, bool) and not _allows_bool(kind)):
                found.append(f"{key!r} is missing or not {_type_names(kind)}")
        for key, length in self.lists.items():
            value = result.get(key)
            if not isinstance(value, list):
                found.append(f"{key!r} is missing or not a list")
            elif len(value) != length:
                found.append(f"{key!r} has {len(value)} entries, expected {length}")
            elif not all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in value):
                found.append(f"{key!r} holds values that are not numbers")
        return found


def _allows_bool(kind) -> bool:
    return bool in (kind if isinstance(kind, tuple) else (kind,))


def _type_names(kind) -> str:
    return " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))


def _restore_nan(result: dict, schema: RunSchema) -> dict:
    """Nulls in number lists back to NaN (they were NaN when written)."""
    return {k: [float("nan") if v is None else v for v in x] if k in schema.lists else x for k, x in result.items()}


@dataclass
class RunCache:
    """The runs of one experiment under ``folder``, content-addressed, with counts of computed and reused runs.

    A run's record ``{stem}_{key[:16]}.json`` holds the format tag, the full key (SHA-256 of the run's
    inputs: experiment, protocol size, model, data fingerprint, lr, seed, steps, batch, dtype, conslaw
    version), the inputs, the SHA-256 of the result and the result. It is reused only when all of that
    matches and the result validates against the experiment's :class:`RunSchema`; a record that does
    not (truncated, ``{}``, ``null``, edited by hand, written by another version) is moved aside to
    ``*.corrupt`` with a warning and the run is computed again. Records are written atomically.
    """

    folder: Path
    computed: int = 0
    reused: int = 0
    set_aside: list[str] = field(default_factory=list)

    def run(self, stem: str, inputs: dict, schema: RunSchema, compute: Callable[[], dict]) -> dict:
        """The valid record of the run with ``inputs``, or ``compute()`` validated, written and returned."""
        found = self.lookup(stem, inputs, schema)
        return found if found is not None else self.store(stem, inputs, schema, compute())

    def path(self, stem: str, inputs: dict) -> Path:
        """Where the record of the run with ``inputs`` lives."""
        return self.folder / f"{stem}_{run_key(inputs)[:16]}.json"

    def lookup(self, stem: str, inputs: dict, schema: RunSchema) -> dict | None:
        """The valid record's result (counted as reused), or None; an invalid record is moved aside first."""
        key = run_key(inputs)
        path = self.path(stem, inputs)
        if not path.exists():
            return None
        reason = self._problem(path, key, inputs, schema)
        if reason is None:
            self.reused += 1
            return _restore_nan(json.loads(path.read_text())["result"], schema)
        aside = _free_name(path.with_name(path.name + ".corrupt"))
        os.replace(path, aside)
        self.set_aside.append(str(aside))
        warnings.warn(f"run record {path} is invalid ({reason}): moved to {aside.name} and computed again",
                      RuntimeWarning, stacklevel=3)
        return None

    def store(self, stem: str, inputs: dict, schema: RunSchema, result: dict) -> dict:
        """Validate ``result``, write its record atomically (counted as computed), return it."""
        key = run_key(inputs)
        safe = json_safe(result)
        problems = schema.problems(safe)
        if problems:
            raise RuntimeError(f"internal error: the run {stem} produced an invalid record: {'; '.join(problems)}")
        record = {"format": RUN_FORMAT, "key": key, "inputs": inputs,
                  "digest": hashlib.sha256(canonical(safe).encode()).hexdigest(), "result": safe}
        atomic_write(self.path(stem, inputs), dumps_json(record))
        self.computed += 1
        return result

    @staticmethod
    def _problem(path: Path, key: str, inputs: dict, schema: RunSchema) -> str | None:
        """Why the record at ``path`` cannot be reused, or None when it can."""
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            return f"unreadable: {type(exc).__name__}"
        if not isinstance(record, dict):
            return f"a JSON {type(record).__name__}, not a run record"
        if record.get("format") != RUN_FORMAT:
            return f"format {record.get('format')!r}, expected {RUN_FORMAT!r}"
        if record.get("key") != key or record.get("inputs") != json_safe(inputs):
            return "its key does not match the run's inputs"
        result = record.get("result")
        problems = schema.problems(result)
        if problems:
            return "; ".join(problems)
        if record.get("digest") != hashlib.sha256(canonical(result).encode()).hexdigest():
            return "its result does not match its digest (edited?)"
        return None

    def counts(self) -> dict:
        """``runs_computed``, ``runs_reused`` (and the records set aside) for the result dict."""
        return {"runs_computed": self.computed, "runs_reused": self.reused, "runs_set_aside": self.set_aside}


def _free_name(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2``, ... : the first name not taken."""
    candidate, k = path, 0
    while candidate.exists():
        k += 1
        candidate = path.with_name(f"{path.name}.{k}")
    return candidate
