"""The one rule for a source that yields nothing usable: a run of unusable samples in a row (missing
files, broken images, empty captions) ends the job with an error that names the last one, instead of
trying the rest of a source that points at nothing; a bad sample among good ones is only skipped.

The limits differ with the order samples come in. Training and evaluation data (`torchclip.train.data`)
come shuffled: with even half of them bad, 200 in a row happen with probability 2**-200, and 200 failed
opens of missing files take well under a second. A photo collection (`torchclip embed`) is read in folder
order, where one folder of unreadable files is no sign that the whole source is wrong, so its limit is
higher. Both numbers are the ones docs/training.md and docs/applications.md state.
"""

MAX_BAD_IN_ROW = 200  # shuffled (image, caption) samples: train, eval
MAX_UNREADABLE_FILES_IN_ROW = 1000  # files in folder order: `torchclip embed` into a store


class BadInRow:
    """Counts unusable samples in a row; `bad()` says when that count reaches `limit`."""

    def __init__(self, limit: int = MAX_BAD_IN_ROW):
        self.limit = limit
        self.count = 0

    def good(self) -> None:
        self.count = 0

    def bad(self) -> bool:
        """One more unusable sample; True when it makes `limit` in a row."""
        self.count += 1
        return self.count >= self.limit
