"""The README's usage example runs as written, and its intercepted and merged models agree."""

import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert "trainable params:" in capsys.readouterr().out
    batch = {"input_ids": jnp.asarray([[101, 7592, 2088, 102]]), "attention_mask": jnp.ones((1, 4), jnp.int32)}
    adapted = namespace["logits"](namespace["params"], batch)
    merged = namespace["model"](**batch, params=namespace["merged"]).logits
    np.testing.assert_allclose(adapted, merged, rtol=1e-4, atol=1e-5)
