"""Report text → standardised sentences ("There is X." / "There is no X."), rule-based.

The offline stand-in for CARZero's LLM rewriting. For each clause of a report it finds the
findings of a vocabulary (class names and synonyms of prompt files) and decides whether each is
negated, NegEx-style:

* a negation cue ("no", "without", "negative for", "free of", "no evidence of", ...) negates
  every finding after it up to the end of the clause ("No effusion or pneumothorax.");
* a post-cue ("... is not seen", "... has resolved", "... ruled out") negates the findings
  before it in the clause;
* clauses end at ``. ; : ! ?``, a new line, and at "but", "however", "although", "except";
* uncertain mentions ("possible pneumonia", "cannot exclude effusion") count as present by
  default (CheXpert's U-ones policy); ``uncertain="drop"`` leaves them out.

A finding named both as present and as absent in one report counts as present. A report with
no finding but a normal statement ("no acute cardiopulmonary abnormality", "lungs are clear")
gives "There is no abnormality."; one with nothing recognised gives no sentence.

Users with a language model plug it in with :class:`CommandStandardiser` (``--standardiser-cmd``):
any program that reads one report on stdin and writes one standardised sentence per line on
stdout, e.g. ``--standardiser-cmd "llm -m my-model -s 'Rewrite as There is X. / There is no X.'"``.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import StitchError, UsageError
from .prompts import PromptSet, load_prompts

NEG_PRE = (
    "no evidence of", "no signs of", "no sign of", "no definite", "negative for", "free of",
    "absence of", "without", "no", "not", "nor", "clear of", "rules out", "ruled out for",
)
NEG_POST = (
    "is not seen", "are not seen", "not seen", "is not identified", "are not identified",
    "not identified", "is absent", "are absent", "has resolved", "have resolved", "resolved",
    "ruled out", "is excluded", "are excluded", "not present",
)
UNCERTAIN = (
    "possible", "possibly", "may represent", "may be", "cannot exclude", "can not exclude",
    "cannot be excluded", "suspicious for", "concerning for", "questionable", "likely", "probable",
)
TERMINATORS = ("but", "however", "although", "except", "though", "whereas")
NORMAL_CUES = (
    "no acute cardiopulmonary", "no acute abnormality", "no acute disease", "no acute findings",
    "lungs are clear", "lungs clear", "clear lungs", "normal chest", "unremarkable chest",
    "no active disease", "within normal limits", "no abnormality",
)
NORMAL_SENTENCE = "There is no abnormality."
# Beyond the curated prompt sets: words notes use for pneumonia-like change.
EXTRA_VOCABULARY = {
    "opacity": ["opacity", "opacities", "opacification", "ground-glass opacity", "ground glass opacity",
                "ground-glass", "ground glass"],
    "acute respiratory distress syndrome": ["ards", "acute respiratory distress syndrome"],
}


@dataclass(frozen=True)
class Finding:
    phrase: str  # what the sentence says: "There is {phrase}."
    synonyms: tuple[str, ...]


def _strip_article(text: str) -> str:
    return re.sub(r"^(a|an|the)\s+", "", text.strip().lower())


def vocabulary_from(prompt_sets: Iterable[PromptSet]) -> list[Finding]:
    """Findings from prompt files: one per class, its synonyms as the words to look for.

    A synonym that is another class's own name belongs to that class only ("consolidation" is
    its own finding, not a pneumonia synonym), so one phrase never yields two sentences.
    """
    classes = [c for ps in prompt_sets for c in ps.classes if c.name.lower() != "normal"]
    own = {_strip_article(c.synonyms[0]) if c.synonyms else c.name.replace("_", " ").lower(): c.name
           for c in classes}
    merged: dict[str, tuple[str, list[str]]] = {}
    for c in classes:
        phrase = c.synonyms[0] if c.synonyms else c.name.replace("_", " ")
        key = _strip_article(phrase)
        words = merged.setdefault(key, (phrase, []))[1]
        for s in [*c.synonyms, c.name.replace("_", " ")]:
            w = _strip_article(s)
            if own.get(w, c.name) == c.name and w not in words:
                words.append(w)
    for name, syns in EXTRA_VOCABULARY.items():
        if name not in merged:
            merged[name] = (name, list(syns))
    return [Finding(phrase, tuple(words)) for phrase, words in merged.values()]


def default_vocabulary() -> list[Finding]:
    return vocabulary_from([load_prompts("cxr14"), load_prompts("pneumonia")])


def _pattern(words: Sequence[str]) -> re.Pattern[str]:
    alts = sorted({re.escape(w).replace(r"\ ", r"[\s-]+").replace(r"\-", r"[\s-]+") for w in words},
                  key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(alts) + r")(?:e?s)?\b")


class RuleStandardiser:
    """Negation-aware, rule-based report → standardised sentences (see the module docstring)."""

    def __init__(self, vocabulary: Sequence[Finding] | None = None, *, uncertain: str = "positive") -> None:
        if uncertain not in ("positive", "drop"):
            raise UsageError(f"uncertain must be 'positive' or 'drop', got {uncertain!r}")
        self.vocabulary = list(vocabulary) if vocabulary is not None else default_vocabulary()
        self.uncertain = uncertain
        self._patterns = [(f, _pattern(f.synonyms)) for f in self.vocabulary]
        self._neg_pre = _pattern(NEG_PRE)
        self._neg_post = _pattern(NEG_POST)
        self._uncertain = _pattern(UNCERTAIN)
        self._normal = _pattern(NORMAL_CUES)
        self._split = re.compile(
            r"[.;:!?\n]+|\b(?:" + "|".join(TERMINATORS) + r")\b", flags=re.IGNORECASE
        )

    def findings(self, report: str) -> dict[str, bool]:
        """Finding phrase → present (True) / absent (False), in order of first mention."""
        result: dict[str, bool] = {}
        for clause in self._split.split(report.lower()):
            if not clause.strip():
                continue
            hits: list[tuple[int, int, Finding]] = []
            for finding, pattern in self._patterns:
                hits.extend((m.start(), m.end(), finding) for m in pattern.finditer(clause))
            hits.sort(key=lambda h: (h[0], -(h[1] - h[0])))
            taken_until = -1
            for start, end, finding in hits:
                if start < taken_until:  # inside a longer, earlier match ("pleural effusion")
                    continue
                taken_until = end
                before, after = clause[:start], clause[end:]
                negated = bool(self._neg_pre.search(before)) or bool(self._neg_post.search(after))
                if not negated and self.uncertain == "drop" and self._uncertain.search(before):
                    continue
                present = not negated
                result[finding.phrase] = result.get(finding.phrase, False) or present
        return result

    def __call__(self, report: str) -> list[str]:
        found = self.findings(report)
        sentences = [f"There is {p}." if present else f"There is no {p}." for p, present in found.items()]
        if not any(found.values()) and self._normal.search(report.lower()):
            sentences.insert(0, NORMAL_SENTENCE)
        return sentences


class CommandStandardiser:
    """Delegate to an external program (an LLM wrapper): report on stdin, sentences on stdout."""

    def __init__(self, command: str, *, timeout: float = 120.0) -> None:
        self.argv = shlex.split(command)
        if not self.argv:
            raise UsageError("standardiser_cmd (--standardiser-cmd) is empty: give a command that reads a report on stdin")
        self.command = command
        self.timeout = timeout

    def __call__(self, report: str) -> list[str]:
        try:
            done = subprocess.run(self.argv, input=report, capture_output=True, text=True,
                                  timeout=self.timeout, check=False)
        except FileNotFoundError as exc:
            raise UsageError(f"--standardiser-cmd: program {self.argv[0]!r} not found") from exc
        except subprocess.TimeoutExpired as exc:
            raise StitchError(f"--standardiser-cmd {self.command!r} took over {self.timeout:.0f} s on one report") from exc
        if done.returncode != 0:
            tail = (done.stderr or "").strip().splitlines()[-1:] or [""]
            raise StitchError(
                f"--standardiser-cmd {self.command!r} exited with status {done.returncode}: {tail[0]}"
            )
        return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def standardise(reports: Sequence[str], standardiser: RuleStandardiser | CommandStandardiser | None = None
                ) -> list[str]:
    """One standardised text per report (sentences joined by spaces; "" when none found)."""
    std = standardiser or RuleStandardiser()
    return [" ".join(std(r or "")) for r in reports]
