"""The one weights + model-card format of every task, stated in code and checked by tests.

A shipped model is three files side by side in ``models/weights/``: ``NAME.pt`` (fp16 state
dict), ``NAME.yaml`` (the run's config, with ``name`` and ``version``) and ``NAME.md`` (this
card). A fine-tuned candidate (``models/learning/finetune.py::model_card``) uses the same card
layout, so a reader (or a reviewer of the next task) finds the same things in the same place:

    # Model card: NAME VERSION
    (free text: status, "trained only on ...", a summary table)
    ## Data
    ## Recipe
    ## Evaluation
    ## Speed            (optional for fine-tuned candidates: not measured on the node)
    ## Intended use
    ## Limitations

A required heading may carry a qualifier after its name (``## Recipe: paper default vs.
used here``, ``## Speed (2-core machine)``). Extra sections (``## What it does``,
``## Retraining on local data``) may stand anywhere; the required ones must appear once
each, in this order.
"""

from __future__ import annotations

import re
from pathlib import Path

# In order. Every card has each of these once; extra sections may stand between them.
REQUIRED_SECTIONS: tuple[str, ...] = ("Data", "Recipe", "Evaluation", "Speed", "Intended use", "Limitations")
# Sections a fine-tuned candidate may leave out (nobody benchmarks on the node that trains it).
CANDIDATE_OPTIONAL: frozenset[str] = frozenset({"Speed"})
TITLE_PREFIX = "# Model card: "
# The provenance statement every card makes: the weights saw only our own generators / data.
PROVENANCE = re.compile(r"\btrained only on\b", re.IGNORECASE)

_HEADING = re.compile(r"^##\s+(.+?)\s*$", re.MULTILINE)


def title(name: str, version: str) -> str:
    """The first line of a card: the same for shipped models and candidates."""
    return f"{TITLE_PREFIX}{name} {version}"


def _section_of(heading: str) -> str | None:
    """The required section a heading opens, if any (its name, then nothing, a space, ':' or '(')."""
    for section in REQUIRED_SECTIONS:
        if heading == section or re.match(re.escape(section) + r"[\s:(]", heading):
            return section
    return None


def check_model_card(text: str, name: str, version: str, *, candidate: bool = False) -> list[str]:
    """Problems with a card, in words (empty: it follows the format).

    ``candidate=True`` for a fine-tuned candidate, which may leave out ``CANDIDATE_OPTIONAL``.
    """
    problems: list[str] = []
    lines = text.splitlines()
    first = lines[0].strip() if lines else ""
    want = title(name, version)
    if first != want:
        problems.append(f"first line is {first!r}, expected {want!r}")
    found = [s for s in (_section_of(h) for h in _HEADING.findall(text)) if s]
    required = [s for s in REQUIRED_SECTIONS if not (candidate and s in CANDIDATE_OPTIONAL)]
    for section in required:
        n = found.count(section)
        if n == 0:
            problems.append(f"no '## {section}' section")
        elif n > 1:
            problems.append(f"'## {section}' appears {n} times")
    order = [s for s in found if s in required]
    expected = [s for s in required if s in order]
    if len(order) == len(set(order)) and order != expected:
        problems.append(f"sections in order {order}, expected {expected}")
    if not PROVENANCE.search(" ".join(text.split())):
        problems.append("no statement that the model was 'trained only on' our own generators / data")
    return problems


def check_weights_bundle(pt_path: Path | str) -> list[str]:
    """Problems with a shipped NAME.pt + NAME.yaml + NAME.md bundle, in words (empty: all fine).

    The .pt must load with ``torch.load(weights_only=True)`` (no pickled code) as a state dict
    whose floating tensors are fp16 (small on disk); the .yaml must name the model and version
    that the card's title states.
    """
    import torch
    import yaml

    pt_path = Path(pt_path)
    problems: list[str] = []
    try:
        state = torch.load(pt_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure is a problem to report
        return [f"{pt_path.name} does not load with torch.load(weights_only=True): {exc}"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        problems.append(f"{pt_path.name} is not a state dict of tensors")
    else:
        not_fp16 = [k for k, v in state.items() if v.is_floating_point() and v.dtype != torch.float16]
        if not_fp16:
            problems.append(f"{len(not_fp16)} floating tensor(s) not fp16, e.g. {not_fp16[0]!r}")
    yaml_path, card_path = pt_path.with_suffix(".yaml"), pt_path.with_suffix(".md")
    if not yaml_path.exists():
        return problems + [f"no {yaml_path.name} beside the weights"]
    config = yaml.safe_load(yaml_path.read_text()) or {}
    name, version = config.get("name"), config.get("version")
    if not name or not version:
        problems.append(f"{yaml_path.name} has no name and version")
    elif name != pt_path.stem:
        problems.append(f"{yaml_path.name} names {name!r}, the file is {pt_path.stem!r}")
    if not card_path.exists():
        return problems + [f"no model card {card_path.name} beside the weights"]
    if name and version:
        problems += [f"{card_path.name}: {p}" for p in check_model_card(card_path.read_text(), str(name), str(version))]
    return problems
