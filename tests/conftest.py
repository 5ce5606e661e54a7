import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def gemma():
    from tl_multineuron import load_model

    return load_model("gemma-3-270m")


def hf_reference(model, checkpoint):
    """The HF model behind ``model``: the module a TransformerBridge wraps, or (TL 3.x
    HookedTransformer, whose weights were converted) the same checkpoint loaded by HF."""
    from tl_multineuron.backends.tl_compat import hf_model

    hf = hf_model(model)
    if hf is not None:
        return hf
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(checkpoint()[0])).eval()


@pytest.fixture(scope="session")
def gemma_hf(gemma):
    from tl_multineuron.backends.models import embedded_checkpoint

    return hf_reference(gemma, embedded_checkpoint)
