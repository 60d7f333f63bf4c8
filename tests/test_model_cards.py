"""Every shipped weights bundle and every fine-tuned candidate's card follow models/model_card.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from models.model_card import REQUIRED_SECTIONS, check_model_card, check_weights_bundle

WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights"


def _bundle_params() -> list:
    return [pytest.param(card, id=card.stem) for card in sorted(WEIGHTS.glob("*.md"))]


@pytest.mark.parametrize("card", _bundle_params())
def test_shipped_bundle_follows_the_format(card: Path):
    pt = card.with_suffix(".pt")
    assert pt.exists(), f"{card.name} has no weights beside it"
    assert check_weights_bundle(pt) == []


def test_every_shipped_weights_file_has_a_card():
    assert sorted(p.stem for p in WEIGHTS.glob("*.pt")) == sorted(p.stem for p in WEIGHTS.glob("*.md"))


def _conformant_card() -> tuple[str, str, str]:
    card = WEIGHTS / "vitiligo_lesion_unet_mobilenetv3.md"
    config = yaml.safe_load(card.with_suffix(".yaml").read_text())
    return card.read_text(), config["name"], config["version"]


def test_a_missing_section_is_reported_in_words():
    text, name, version = _conformant_card()
    assert check_model_card(text, name, version) == []
    broken = text.replace("## Speed\n", "## Timing\n", 1)
    assert check_model_card(broken, name, version) == ["no '## Speed' section"]


def test_a_wrong_version_is_reported_in_words():
    text, name, version = _conformant_card()
    problems = check_model_card(text, name, "9.9.9")
    assert len(problems) == 1 and "expected '# Model card: vitiligo_lesion_unet_mobilenetv3 9.9.9'" in problems[0]


def test_sections_out_of_order_and_missing_provenance_are_reported():
    text = "\n".join(["# Model card: m 1.0.0", "## Recipe", "## Data", "## Evaluation", "## Speed",
                      "## Intended use", "## Limitations", ""])
    problems = check_model_card(text, "m", "1.0.0")
    assert any("order" in p for p in problems) and any("trained only on" in p for p in problems)


def test_a_bundle_with_fp32_weights_and_a_mismatched_yaml_is_reported(tmp_path):
    import torch

    torch.save({"w": torch.zeros(2, dtype=torch.float32), "n": torch.tensor(3)}, tmp_path / "m.pt")
    (tmp_path / "m.yaml").write_text("name: m\nversion: 1.0.0\n")
    sections = "\n".join(f"## {s}\ntext" for s in REQUIRED_SECTIONS)
    (tmp_path / "m.md").write_text(f"# Model card: m 1.0.1\n\nTrained only on our own generators.\n{sections}\n")
    problems = check_weights_bundle(tmp_path / "m.pt")
    assert len(problems) == 2
    assert "not fp16" in problems[0] and "expected '# Model card: m 1.0.0'" in problems[1]


def test_a_fine_tuned_candidates_card_follows_the_format():
    """The card finetune.execute writes, from an info dict of the shape it builds."""
    from models.learning.finetune import ENGINES, model_card
    from models.learning.registry import ModelVersion

    base = ModelVersion(id="vitiligo_lesion-0", app="vitiligo_lesion", name="vitiligo_lesion_unet_mobilenetv3",
                        version="0.2.0", weights=WEIGHTS / "vitiligo_lesion_unet_mobilenetv3.pt",
                        weights_sha256="0" * 64, state="active", created="2026-12-01T00:00:00+00:00", info={})
    metrics = {"mean_dice": 0.81, "pooled_dice": 0.84, "f_vitiligo_abs_error_median_pp": 2.5, "n": 3}
    evaluation = {"active": {"version": "0.2.0", "held_out": metrics, "synthetic": metrics},
                  "candidate": {"version": "0.2.0-local.1", "held_out": metrics, "synthetic": None},
                  "verdict": "equal", "delta": {"held_out_mean_dice": 0.0, "synthetic_mean_dice": 0.0}}
    data = {"local_photographs_train": 7, "local_photographs_held_out": 3,
            "photograph_date_range": ["2026-11-10", "2026-11-20"], "correction_sources": ["OHIF"]}
    recipe = {"iterations": 40, "learning_rate": 1e-4, "batch_size": 4, "input_size": None, "holdout_percent": 20,
              "engine": ENGINES["vitiligo_lesion"], "synthetic_eval_samples": 8, "replay_synthetic": 1.0}
    info = {"run": "vitiligo_lesion-20261201T000000", "parent": base.id, "evaluation": evaluation,
            "data": data, "recipe": recipe}
    card = model_card("vitiligo_lesion", "0.2.0-local.1", base, info)
    assert check_model_card(card, base.name, "0.2.0-local.1", candidate=True) == []
    assert "local photographs used for training: 7" in card and "## Recipe" in card
    # Speed is optional for a candidate only: a shipped model's card must have it.
    assert check_model_card(card, base.name, "0.2.0-local.1") == ["no '## Speed' section"]
