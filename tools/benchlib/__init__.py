"""The pieces of ``tools/bench``: one module per figure, plus shared helpers.

Every figure is measured next to a baseline taken in the same run on the
same machine, so a result reads as a ratio rather than an absolute number
that only means something on the machine it came from.
"""
