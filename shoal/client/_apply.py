"""Schedules as code: the plan that makes an account's schedules match a file, and applying it.

The file is YAML: a list of schedule bodies (as ``POST /v1/schedules`` takes them), or a
mapping with such a list under ``schedules``. A body's ``name`` is its identity: a name in the
file and not on the server is created, one on both is updated by a ``PATCH`` of only the
top-level fields that differ, and one only on the server is deleted when pruning (the default
of ``shoal schedules apply``; ``--no-prune`` leaves it alone).

"Differ" is judged after both sides are read through the contract's own models, so a field
the server echoes with its defaults filled in (``concurrency: 32``) is not a change, and a field
the file leaves out goes back to its default (``quality`` dropped from the file is cleared).
``paused`` is the exception: left out of the file, it is not managed, so a schedule someone
paused (in the API or the Prefect UI) stays paused until the file says ``paused: false``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from shoal.client._models import Schedule
from shoal.client._schedules import Schedules
from shoal.contract import CompareSpec, JobCreate, QualitySpec

Action = Literal["create", "update", "delete", "unchanged"]

#: a field the file leaves out is set back to this (``paused`` is not here: see above)
DEFAULTS: dict[str, Any] = {
    "cron": None,
    "interval_s": None,
    "timezone": "UTC",
    "compare": None,
    "conditional": False,
    "quality": None,
}
#: fields compared through a contract model, defaults filled in on both sides
_MODELS: dict[str, type[BaseModel]] = {
    "job": JobCreate,
    "compare": CompareSpec,
    "quality": QualitySpec,
}


class FileError(ValueError):
    """The schedules file is not a list of named schedule bodies."""


@dataclass
class Change:
    """One step of a plan: ``fields`` is the whole body (create) or what is PATCHed (update);
    ``differs`` names what differs, down to nested fields (``job.defaults.extract.price``)."""

    action: Action
    name: str
    schedule_id: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    differs: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "name": self.name,
            "id": self.schedule_id,
            "fields": self.fields,
            "differs": self.differs,
        }


@dataclass
class Plan:
    changes: list[Change]

    def of(self, action: Action) -> list[Change]:
        return [c for c in self.changes if c.action == action]

    @property
    def empty(self) -> bool:
        return all(c.action == "unchanged" for c in self.changes)

    def summary(self) -> str:
        n = {a: len(self.of(a)) for a in ("create", "update", "delete", "unchanged")}
        return (
            f"{n['create']} to create, {n['update']} to update, {n['delete']} to delete, "
            f"{n['unchanged']} unchanged"
        )


def read_file(path: str | Path) -> list[dict[str, Any]]:
    """The schedule bodies of a YAML file, each with a unique non-empty ``name``."""
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise FileError(f"{path}: not YAML: {exc}") from exc
    if isinstance(loaded, Mapping) and set(loaded) == {"schedules"}:
        loaded = loaded["schedules"]
    if loaded is None:
        loaded = []
    if not isinstance(loaded, list):
        raise FileError(f"{path}: expected a list of schedules (or `schedules:` holding one)")
    seen: set[str] = set()
    bodies = []
    for i, item in enumerate(loaded):
        if not isinstance(item, Mapping):
            raise FileError(f"{path}: schedule [{i}] is not a mapping")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise FileError(f"{path}: schedule [{i}] has no `name` (apply matches by name)")
        if name in seen:
            raise FileError(f"{path}: the name {name!r} is given twice")
        seen.add(name)
        bodies.append(dict(item))
    return bodies


def plan(wanted: list[dict[str, Any]], current: list[Schedule], *, prune: bool = True) -> Plan:
    """What makes ``current`` (the account's schedules) match ``wanted`` (the file's bodies).

    A name held by two schedules on the server is refused (``FileError``): which one the file
    means cannot be told."""
    by_name: dict[str, Schedule] = {}
    for s in current:
        if s.name in by_name:
            raise FileError(f"two schedules on the server are called {s.name!r}: rename one")
        by_name[s.name] = s
    changes: list[Change] = []
    for body in wanted:
        have = by_name.pop(body["name"], None)
        if have is None:
            changes.append(Change("create", body["name"], fields=body))
            continue
        patch, differs = _patch(body, have.model_dump(mode="json"))
        action: Action = "update" if patch else "unchanged"
        changes.append(Change(action, body["name"], have.id, patch, differs))
    for left in by_name.values():
        changes.append(Change("delete" if prune else "unchanged", left.name, left.id))
    return Plan(changes)


def apply(schedules: Schedules, todo: Plan) -> list[Change]:
    """Carry out the plan: creates, then updates, then deletes; the changes made. The first
    error answer stops it (raised), the steps before it stay done: apply again to go on."""
    done = []
    for step in todo.of("create") + todo.of("update") + todo.of("delete"):
        if step.action == "create":
            step.schedule_id = schedules.create(step.fields).id
        elif step.action == "update":
            assert step.schedule_id is not None
            schedules.patch(step.schedule_id, step.fields)
        else:
            assert step.schedule_id is not None
            schedules.delete(step.schedule_id)
        done.append(step)
    return done


def _patch(body: Mapping[str, Any], have: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The top-level fields to PATCH so that ``have`` matches ``body``, and what differs."""
    names = (set(body) | set(DEFAULTS)) - {"name"}
    if "cron" not in body:
        names.discard("timezone")  # the zone of a cron: an interval schedule has none to match
    patch: dict[str, Any] = {}
    differs: list[str] = []
    for name in sorted(names):
        want = body[name] if name in body else DEFAULTS[name]
        a, b = _normal(name, want), _normal(name, have.get(name))
        if a != b:
            patch[name] = want
            differs.extend(_diff_paths(b, a, name) or [name])
    # giving `cron` drops `interval_s` and the other way round (SchedulePatch): no null for it
    for one, other in (("cron", "interval_s"), ("interval_s", "cron")):
        if patch.get(one) is not None and other in patch and patch[other] is None:
            del patch[other]
    return patch, differs


def _normal(name: str, value: Any) -> Any:
    """``value`` of field ``name`` with the contract's defaults filled in, when it reads."""
    if name == "timezone":
        return value or DEFAULTS["timezone"]  # no timezone is UTC
    model = _MODELS.get(name)
    if model is None or value is None:
        return value
    try:
        return model.model_validate(value).model_dump(mode="json")
    except ValidationError:
        return value  # the server will say what is wrong with it; compare as written


def _diff_paths(old: Any, new: Any, at: str) -> list[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return [p for k in sorted(set(old) | set(new)) for p in _diffs(old, new, k, at)]
    return [at] if old != new else []


def _diffs(old: Mapping[str, Any], new: Mapping[str, Any], key: str, at: str) -> Iterator[str]:
    yield from _diff_paths(old.get(key), new.get(key), f"{at}.{key}")
