"""Data sets that are library, not training: the synthetic shapes world (training, evaluation and the
tests draw from it), and the one rule for a source that yields nothing usable.

    synthetic.py    `SyntheticCaptions`: coloured shapes and their captions, a pure function of (seed, index)
    bad_samples.py  how many unusable samples in a row end a job
"""
