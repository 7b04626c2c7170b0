"""The rule-based, negation-aware report standardiser and the command hook."""

from __future__ import annotations

import sys

import pytest

from stitchkit.errors import StitchError
from stitchkit.zeroshot.standardise import CommandStandardiser, RuleStandardiser, standardise


@pytest.fixture(scope="module")
def std() -> RuleStandardiser:
    return RuleStandardiser()


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ("No pleural effusion or pneumothorax.", ["There is no pleural effusion.", "There is no pneumothorax."]),
        ("Right lower lobe consolidation, but no effusion.", ["There is consolidation.", "There is no pleural effusion."]),
        ("Pneumothorax has resolved.", ["There is no pneumothorax."]),
        ("Heart is enlarged; cardiomegaly.", ["There is cardiomegaly."]),
        ("Lungs are clear. No acute cardiopulmonary abnormality.", ["There is no abnormality."]),
        ("Without evidence of pulmonary edema.", ["There is no pulmonary edema."]),
        ("Bilateral pleural effusions.", ["There is pleural effusion."]),
        ("Possible pneumonia.", ["There is pneumonia."]),
        ("The patient is intubated.", []),
    ],
)
def test_rules(std: RuleStandardiser, report: str, expected: list[str]) -> None:
    assert std(report) == expected


def test_uncertain_can_be_dropped() -> None:
    assert RuleStandardiser(uncertain="drop")("Possible pneumonia. Effusion.") == ["There is pleural effusion."]


def test_present_beats_absent(std: RuleStandardiser) -> None:
    assert std("No pneumothorax on the left. Small right pneumothorax.") == ["There is pneumothorax."]


def test_command_hook(tmp_path) -> None:
    script = tmp_path / "fake_llm.py"
    script.write_text("import sys\ntext = sys.stdin.read()\nprint('There is ' + text.strip().lower() + '.')\n")
    hook = CommandStandardiser(f"{sys.executable} {script}")
    assert standardise(["Pneumonia"], hook) == ["There is pneumonia."]
    failing = CommandStandardiser(f"{sys.executable} -c 'import sys; sys.exit(3)'")
    with pytest.raises(StitchError, match="exited with status 3"):
        failing("x")
