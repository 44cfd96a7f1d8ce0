"""Rule-based scoring of poems and slogans (paper §5.2.1, App. C); no torch here.

``score_poem(record, completion)`` and ``score_slogan(record, completion)`` return
each metric in [0, 1] and their mean ``score``; ``eval-poem`` and ``judge poem`` /
``judge slogan`` both call them, so they agree. See :mod:`dpo3d.poetry.scoring`
and :mod:`dpo3d.poetry.slogan` for the rules, :mod:`dpo3d.poetry.text` for how a
completion is read, and :mod:`dpo3d.poetry.tones` for the entering-tone (入声) fix.
"""

from dpo3d.poetry.scoring import POEM_FORMS, POEM_METRICS, poem_form, score_poem
from dpo3d.poetry.slogan import score_slogan
from dpo3d.poetry.text import parse_poem

SLOGAN_METRICS = ("word_count", "content")

__all__ = ["POEM_FORMS", "POEM_METRICS", "SLOGAN_METRICS", "parse_poem", "poem_form", "score_poem", "score_slogan"]
