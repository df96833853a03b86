"""Groups of correlated images: the unit a selection split must hold out whole.

Frames of one video sequence (CamVid's ``0016E5_07959`` belongs to sequence ``0016E5``), shots of one recording
session or one site look alike; a model chosen on a split that shares a group with its training data is chosen for
memorising that group, and its figure there overstates what a user gets on a new street. So selection splits are
built from whole groups, and every evaluation says whether its images share a group with the weights' training data.

A dataset declares its groups in ``{root}/groups.yaml``, either ``pattern: REGEX`` (the first capture group of the
file stem names the group) or ``groups: {STEM: GROUP, ...}``. Without the file, the stem's prefix before the first
underscore is the group (CamVid's sequences); a stem without an underscore is a group of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeseg.errors import EdgesegError
from edgeseg.io import load_yaml_mapping

GROUPS_FILE = "groups.yaml"
DEFAULT_PATTERN = r"^([^_]+)_"


def group_rule(root: Path | None) -> Callable[[str], str]:
    """stem -> group for the dataset at ``root`` (its ``groups.yaml``, else the prefix before the first ``_``)."""
    declared = Path(root) / GROUPS_FILE if root is not None else None
    if declared is not None and declared.is_file():
        spec = load_yaml_mapping(declared, "groups file", "pattern: REGEX or groups: {stem: group}")
        if "groups" in spec:
            table = spec["groups"]
            if not isinstance(table, dict) or not all(isinstance(v, str | int) for v in table.values()):
                raise EdgesegError(f"{declared}: groups must map file stems to group names")
            mapping = {str(k): str(v) for k, v in table.items()}
            return lambda stem: mapping.get(stem, stem)
        if "pattern" in spec:
            return _pattern_rule(str(spec["pattern"]), declared)
        raise EdgesegError(f"{declared}: expected 'pattern: REGEX' or 'groups: {{stem: group}}'")
    return _pattern_rule(DEFAULT_PATTERN, None)


def _pattern_rule(pattern: str, where: Path | None) -> Callable[[str], str]:
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise EdgesegError(f"{where or 'groups'}: pattern {pattern!r} is not a regular expression ({exc})") from None
    if rx.groups < 1:
        raise EdgesegError(f"{where or 'groups'}: pattern {pattern!r} needs one capture group naming the group")

    def rule(stem: str) -> str:
        m = rx.match(stem)
        return m.group(1) if m else stem

    return rule


def groups_of(stems: Iterable[str], root: Path | None) -> dict[str, int]:
    """Group name -> number of images among ``stems``."""
    rule = group_rule(root)
    counts: dict[str, int] = {}
    for stem in stems:
        g = rule(stem)
        counts[g] = counts.get(g, 0) + 1
    return dict(sorted(counts.items()))


@dataclass(frozen=True)
class GroupSplit:
    """Indices into a pooled sample list: training images and the held-out selection images, by whole groups."""

    train: list[int]
    select: list[int]
    train_groups: dict[str, int]
    select_groups: dict[str, int]


def split_by_groups(stems: Sequence[str], root: Path | None, holdout: Iterable[str]) -> GroupSplit:
    """Hold out every image of the groups in ``holdout``; train on all others. No group is on both sides."""
    rule = group_rule(root)
    holdout = set(holdout)
    present = {rule(s) for s in stems}
    unknown = sorted(holdout - present)
    if unknown:
        raise EdgesegError(
            f"selection group(s) {', '.join(unknown)} not in the data: the groups are {', '.join(sorted(present))}"
        )
    if holdout >= present:
        raise EdgesegError("the selection split would hold out every group: leave at least one group to train on")
    train = [i for i, s in enumerate(stems) if rule(s) not in holdout]
    select = [i for i, s in enumerate(stems) if rule(s) in holdout]
    split = GroupSplit(
        train,
        select,
        groups_of([stems[i] for i in train], root),
        groups_of([stems[i] for i in select], root),
    )
    assert not set(split.train_groups) & set(split.select_groups)
    return split


def shared_groups(train_groups: Iterable[str], eval_stems: Iterable[str], root: Path | None) -> list[str]:
    """Groups of the evaluated images that the training data also holds (empty: an honest held-out figure)."""
    return sorted(set(groups_of(eval_stems, root)) & set(train_groups))


def overlap_warning(split: str, shared: list[str]) -> str:
    """The one line an evaluation or a training run prints when its figure comes from seen groups."""
    return (
        f"warning: the {split!r} images share group(s) {', '.join(shared)} with the training data: this mIoU "
        "overstates what a new sequence gets (select on whole held-out groups: edgeseg train --select-groups)"
    )
