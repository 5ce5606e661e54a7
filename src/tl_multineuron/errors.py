"""The library's one exception type."""


class MultiNeuronError(ValueError):
    """Raised for bad input to tl_multineuron: the message names the bad value and what was
    expected (which item, which language, which argument)."""
