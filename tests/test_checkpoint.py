"""Adapter checkpoints: bit-exact round trips, what is stored, sizes, atomic saves (SIGKILL), and each error."""

import json
import pathlib
import signal
import subprocess
import sys
import textwrap

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fourier_flax
from fourier_flax import checkpoint
from fourier_flax.adapter import init_adapter
from fourier_flax.checkpoint import AdapterMismatchError, load_adapter, save_adapter
from fourier_flax.methods.fourierft import FourierFTConfig
from fourier_flax.methods.lora import LoraConfig

pytestmark = pytest.mark.usefixtures("strict_jax")

D = 6


class Block(nn.Module):
    """A BERT-like block: square query/value, a non-square intermediate, a LayerNorm."""

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(D, name="query")(x) + nn.Dense(D, name="value")(x)
        h = nn.Dense(2 * D, name="intermediate")(h)
        return nn.LayerNorm(name="norm")(nn.Dense(D, name="output")(h))


class Tiny(nn.Module):
    layers: int = 2
    labels: int = 3

    @nn.compact
    def __call__(self, x):
        for i in range(self.layers):
            x = Block(name=f"block_{i}")(x)
        return nn.Dense(self.labels, name="classifier")(x)


class Scanned(nn.Module):
    """Three blocks stacked by nn.scan: kernels (3, in, out) under ``stack``."""

    @nn.compact
    def __call__(self, x):
        scan = nn.scan(
            lambda module, carry, _: (module(carry), None),
            variable_axes={"params": 0},
            split_rngs={"params": True},
            length=3,
        )
        return scan(Block(name="stack"), x, None)[0]


def base(layers: int = 2, labels: int = 3, seed: int = 0) -> dict:
    return Tiny(layers, labels).init(jax.random.key(seed), jnp.ones((1, D)))


FOURIER = FourierFTConfig(
    target_modules=["query", "value", "intermediate"],
    n_frequency=7,
    n_frequency_pattern={"intermediate": 11},
    scaling=33.0,
    random_loc_seed=4242,
    modules_to_save=["classifier"],
    bias="fourier_only",
)


def adapted(config=FOURIER, tree=None, seed: int = 1):
    return init_adapter(base() if tree is None else tree, config, jax.random.key(seed))


def assert_same_leaves(actual, expected):
    """Same tree, and every leaf bit-identical with the same dtype."""
    chex.assert_trees_all_equal(actual, expected, strict=True)


def metadata_file(path: pathlib.Path) -> pathlib.Path:
    return checkpoint.latest_step_directory(path) / "metadata" / "metadata"


def edit_metadata(path: pathlib.Path, edit) -> None:
    file = metadata_file(path)
    metadata = json.loads(file.read_text())
    edit(metadata)
    file.write_text(json.dumps(metadata))


# --- round trips -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        FOURIER,
        FourierFTConfig(target_modules=["query"], n_frequency=5, bias="all"),
        FourierFTConfig(
            target_modules=["value"],
            n_frequency=9,
            entry_sampling="frequency_bias",
            center_frequency=1.0,
            bandwidth=2.0,
        ),
        FourierFTConfig(target_modules=r"block_1\..*", n_frequency=4, entry_sampling="uniform"),
        LoraConfig(target_modules=["query", "value"], r=2, lora_alpha=4.0, modules_to_save=["classifier"]),
    ],
    ids=["fourier_head_bias", "bias_all", "frequency_bias", "uniform_regex", "lora"],
)
def test_round_trip_is_bit_exact(tmp_path, config):
    params = adapted(config)
    save_adapter(tmp_path / "adapter", params, config)
    loaded_config, loaded = load_adapter(tmp_path / "adapter", base())
    assert loaded_config == config
    assert_same_leaves(loaded, params)


def test_round_trip_of_stacked_layers(tmp_path):
    variables = Scanned().init(jax.random.key(0), jnp.ones((1, D)))
    config = FourierFTConfig(target_modules=["query", "intermediate"], n_frequency=5)
    params = init_adapter(variables, config, jax.random.key(1), stacked_axes={"stack": 1})
    assert params["params"]["stack"]["query"]["fourierft_spectrum"].shape == (3, 5)
    save_adapter(tmp_path / "a", params, config)
    _, loaded = load_adapter(tmp_path / "a", variables)
    assert_same_leaves(loaded, params)


def test_bare_params_tree_round_trip(tmp_path):
    params = adapted()["params"]
    save_adapter(tmp_path / "a", params, FOURIER)
    _, loaded = load_adapter(tmp_path / "a", base()["params"])
    assert_same_leaves(loaded, params)


def test_stores_only_the_trained_leaves(tmp_path):
    params = adapted()
    save_adapter(tmp_path / "a", params, FOURIER)
    metadata = checkpoint.read_metadata(tmp_path / "a")
    expected = {
        f"block_{i}.{module}.{leaf}"
        for i in range(2)
        for module in ("query", "value", "intermediate")
        for leaf in ("fourierft_spectrum", "bias")
    } | {"classifier.kernel", "classifier.bias"}
    assert set(metadata["leaves"]) == expected
    assert set(checkpoint.read_leaves(tmp_path / "a", metadata)) == {tuple(name.split(".")) for name in expected}
    assert metadata["modules"]["block_0.intermediate"]["n"] == 11
    assert metadata["modules"]["block_0.intermediate"]["kernel_shape"] == [D, 2 * D]
    assert metadata["config"]["n_frequency_pattern"] == {"intermediate": 11}


def test_records_the_sha256_of_each_entry_set(tmp_path):
    import hashlib

    from fourier_flax.methods.fourierft.entries import peft_entries

    save_adapter(tmp_path / "a", adapted(), FOURIER)
    record = checkpoint.read_metadata(tmp_path / "a")["modules"]["block_1.intermediate"]
    entries = peft_entries((D, 2 * D), 11, 4242)  # the Flax (in, out) kernel's PEFT entries
    assert record["entries"] == {
        "rule": "peft",
        "seed": 4242,
        "grid": "in_out",
        "sha256": hashlib.sha256(entries.astype("<i4").tobytes()).hexdigest(),
    }


def test_roberta_base_query_value_adapter_is_about_100_kb(tmp_path):
    """12 layers x {query, value} x n=1000 float32 = 96,000 bytes of spectra (kernels: zero-memory views).

    Measured 111,907 bytes: orbax zstd-compresses the spectra to ~86.5 KB, the rest is orbax and our metadata.
    """
    kernel = np.broadcast_to(np.float32(0), (768, 768))
    layers = {
        str(i): {"attention": {"self": {"query": {"kernel": kernel}, "value": {"kernel": kernel}}}} for i in range(12)
    }
    tree = {"encoder": {"layer": layers}}
    config = FourierFTConfig(target_modules=["query", "value"], n_frequency=1000)
    step_dir = save_adapter(tmp_path / "roberta", init_adapter(tree, config, jax.random.key(0)), config)
    on_disk = sum(p.stat().st_size for p in step_dir.rglob("*") if p.is_file())
    assert 80_000 < on_disk < 140_000, on_disk
    _, loaded = load_adapter(tmp_path / "roberta", tree)
    assert loaded["encoder"]["layer"]["11"]["attention"]["self"]["value"]["fourierft_spectrum"].shape == (1000,)


def test_saving_again_replaces_the_checkpoint(tmp_path):
    first, second = adapted(seed=1), adapted(seed=2)
    save_adapter(tmp_path / "a", first, FOURIER)
    step_dir = save_adapter(tmp_path / "a", second, FOURIER)
    assert [p.name for p in (tmp_path / "a").iterdir()] == [step_dir.name]
    _, loaded = load_adapter(tmp_path / "a", base())
    assert_same_leaves(loaded, second)


# --- atomicity: a writer killed mid-save ---------------------------------------------------------------------

# The child saves a new adapter and blocks at a chosen point of orbax's save, after printing a line; the
# parent SIGKILLs it there. "started": the temporary step directory exists, no array written yet.
# "written": every file of the new step is written, the final rename has not happened.
CHILD = """
import asyncio, sys, time
import jax, orbax.checkpoint as ocp
sys.path.insert(0, {tests!r})
from test_checkpoint import FOURIER, adapted
from fourier_flax.checkpoint import save_adapter

def block(message):
    print(message, flush=True)
    time.sleep(600)

point = {point!r}
if point == "started":
    async def async_save(self, *args, **kwargs):
        block("STARTED")
    ocp.StandardCheckpointHandler.async_save = async_save
else:
    original = ocp.StandardCheckpointHandler.finalize
    def finalize(self, directory):
        original(self, directory)
        block("WRITTEN")
    ocp.StandardCheckpointHandler.finalize = finalize
save_adapter({path!r}, adapted(seed=9), FOURIER)
print("FINISHED", flush=True)
"""


def kill_writer_mid_save(path: pathlib.Path, point: str) -> None:
    script = CHILD.format(tests=str(pathlib.Path(__file__).parent), point=point, path=str(path))
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline().strip()
        assert line == point.upper(), f"the writer did not reach {point!r}: {line!r}"
        assert any(".orbax-checkpoint-tmp" in p.name for p in path.iterdir()), list(path.iterdir())
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        child.kill()
        child.stdout.close()


@pytest.mark.parametrize("point", ["started", "written"])
def test_killed_save_leaves_previous_checkpoint_loadable(tmp_path, point):
    previous = adapted(seed=1)
    save_adapter(tmp_path / "a", previous, FOURIER)
    kill_writer_mid_save(tmp_path / "a", point)
    _, loaded = load_adapter(tmp_path / "a", base())
    assert_same_leaves(loaded, previous)
    latest = adapted(seed=3)  # the next save completes and clears the stale temporary directory
    save_adapter(tmp_path / "a", latest, FOURIER)
    assert not any(".orbax-checkpoint-tmp" in p.name for p in (tmp_path / "a").iterdir())
    assert_same_leaves(load_adapter(tmp_path / "a", base())[1], latest)


def test_killed_first_save_says_the_save_was_interrupted(tmp_path):
    (tmp_path / "a").mkdir()
    kill_writer_mid_save(tmp_path / "a", "written")
    with pytest.raises(FileNotFoundError, match="only unfinished saves.*interrupted"):
        load_adapter(tmp_path / "a", base())


# --- errors: one test per message ----------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path) -> pathlib.Path:
    save_adapter(tmp_path / "a", adapted(), FOURIER)
    return tmp_path / "a"


def mismatches(path, base_params) -> list[str]:
    with pytest.raises(AdapterMismatchError) as error:
        load_adapter(path, base_params)
    assert all(m in str(error.value) for m in error.value.mismatches)
    return error.value.mismatches


def test_module_missing_from_base(saved):
    problems = mismatches(saved, base(layers=1))
    assert problems == [
        f"module block_1.{m}: in the adapter, but the base params have no kernel there"
        for m in ("intermediate", "query", "value")
    ] + [
        f"leaf block_1.{m}.bias: in the adapter, but not in the base params" for m in ("intermediate", "query", "value")
    ]


def test_base_module_targeted_but_not_in_adapter(saved):
    assert mismatches(saved, base(layers=3)) == [
        f"module block_2.{m}: targeted by the config, but the adapter has no weights for it"
        for m in ("intermediate", "query", "value")
    ]


def test_kernel_shape_mismatch(saved):
    tree = base()
    tree["params"]["block_0"]["intermediate"]["kernel"] = jnp.zeros((D, 3 * D))
    assert mismatches(saved, tree) == [
        f"module block_0.intermediate: the adapter was trained on a kernel of shape ({D}, {2 * D}), the base kernel "
        f"is ({D}, {3 * D})"
    ]


def test_head_shape_mismatch(saved):
    assert mismatches(saved, base(labels=2)) == [
        "leaf classifier.bias: adapter shape (3,), base shape (2,)",
        f"leaf classifier.kernel: adapter shape ({D}, 3), base shape ({D}, 2)",
    ]


def test_n_mismatch(saved):
    edit_metadata(saved, lambda m: m["config"].update(n_frequency_pattern={}))
    assert mismatches(saved, base()) == [
        f"module block_{i}.intermediate: stores n=11 coefficients, the config gives n=7" for i in range(2)
    ]


def test_seed_mismatch(saved):
    edit_metadata(saved, lambda m: m["config"].update(random_loc_seed=5))
    problems = mismatches(saved, base())
    assert "module block_0.query: entries seed is 4242, the config says 5" in problems
    assert len(problems) == 12  # seed and digest, for each of the 6 modules


def test_entry_digest_mismatch_names_the_library_versions(saved):
    def edit(metadata):
        metadata["modules"]["block_0.value"]["entries"]["sha256"] = "0" * 64
        metadata["library_version"] = "0.0.1"

    edit_metadata(saved, edit)
    assert mismatches(saved, base()) == [
        "module block_0.value: the entry set drawn here differs from the one the adapter was trained on (sha256 "
        f"mismatch; 'peft' sampling, seed 4242, view ({D}, {D}))",
        f"the adapter was written by fourier_flax 0.0.1, this is {fourier_flax.__version__}",
    ]


def test_base_already_holds_another_adapter(saved):
    tree = init_adapter(base(), FourierFTConfig(target_modules=["output"], n_frequency=3), jax.random.key(0))
    assert mismatches(saved, tree) == [
        f"leaf block_{i}.output.fourierft_spectrum: the base params already hold an adapter leaf the checkpoint lacks"
        for i in range(2)
    ]


def test_all_mismatches_in_one_error(saved):
    tree = base(layers=3, labels=2)
    assert len(mismatches(saved, tree)) == 3 + 2


def test_nothing_is_read_before_the_checks_pass(saved, monkeypatch):
    monkeypatch.setattr(checkpoint, "read_leaves", lambda *a: pytest.fail("leaves read before the checks"))
    mismatches(saved, base(layers=1))


def test_format_version_mismatch(saved):
    edit_metadata(saved, lambda m: m.update(format_version=99))
    with pytest.raises(ValueError, match="format version 99 .* reads version 1. Load it with a matching"):
        load_adapter(saved, base())


def test_not_an_adapter_checkpoint(saved):
    edit_metadata(saved, lambda m: m.update(format="something.else"))
    with pytest.raises(ValueError, match="is not a fourier_flax adapter checkpoint"):
        load_adapter(saved, base())


def test_stored_leaves_disagree_with_metadata(saved):
    edit_metadata(saved, lambda m: m["leaves"]["classifier.bias"].update(shape=[4]))
    with pytest.raises(ValueError, match=r"inconsistent:\n  - classifier.bias: stored \(3,\) float32, recorded \(4,\)"):
        checkpoint.read_leaves(saved, checkpoint.read_metadata(saved))


def test_unknown_config_field(saved):
    edit_metadata(saved, lambda m: m["config"].update(spectral_dropout=0.1))
    with pytest.raises(ValueError, match=r"fields \['spectral_dropout'\] that this fourier_flax"):
        load_adapter(saved, base())


def test_no_checkpoint_at_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no complete fourier_flax adapter checkpoint"):
        load_adapter(tmp_path, base())


def test_refuses_to_write_into_a_foreign_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds \['notes.txt'\], which are not fourier_flax adapter checkpoint"):
        save_adapter(tmp_path, adapted(), FOURIER)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_refuses_params_without_adapter(tmp_path):
    with pytest.raises(ValueError, match="hold no 'fourierft_spectrum' leaves"):
        save_adapter(tmp_path / "a", base(), FOURIER)


def test_save_refuses_a_config_that_does_not_fit_params(tmp_path):
    other = FourierFTConfig(target_modules=["query", "value", "intermediate"], n_frequency=7)  # no n=11 override
    with pytest.raises(AdapterMismatchError, match="do not match the config passed to save_adapter") as error:
        save_adapter(tmp_path / "a", adapted(), FourierFTConfig(target_modules=["query", "value"], n_frequency=7))
    assert error.value.mismatches[:2] == [
        f"module block_{i}.intermediate: has adapter weights, but the config does not target it" for i in range(2)
    ]
    with pytest.raises(AdapterMismatchError, match="stores n=11 coefficients, the config gives n=7"):
        save_adapter(tmp_path / "a", adapted(), other)
    assert not (tmp_path / "a").exists()


def test_lora_rank_mismatch(tmp_path):
    config = LoraConfig(target_modules=["query"], r=2)
    save_adapter(tmp_path / "a", adapted(config), config)
    edit_metadata(tmp_path / "a", lambda m: m["config"].update(r=4))
    assert mismatches(tmp_path / "a", base()) == [
        f"module block_{i}.query: stores rank 2, the config has r=4" for i in range(2)
    ]
