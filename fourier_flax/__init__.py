"""fourier_flax: FourierFT (Gao et al., ICML 2024) and its neighbours for JAX/Flax.

The top level holds PEFT's verbs, the adapter configs and the params-tree helpers. The rest lives in its own
namespace: each method's math under :mod:`fourier_flax.methods` (FourierFT's in
:mod:`fourier_flax.methods.fourierft`), flax.nnx surgery in :mod:`fourier_flax.nnx`, model definitions and loaders
in :mod:`fourier_flax.models`, device meshes in :mod:`fourier_flax.mesh` and :mod:`fourier_flax.sharding`, and
training recipes (the GLUE pipeline, causal-LM fine-tuning, train steps, losses) in :mod:`fourier_flax.finetune`;
:func:`generate` decodes from a causal LM.

Example::

  config = fourier_flax.FourierFTConfig(target_modules=["query", "value"], n_frequency=1000, scaling=150.0)
  peft_model = fourier_flax.get_peft_model(model, config, jax.random.key(0))
"""

from fourier_flax.adapted_modules import adapter_module_paths
from fourier_flax.adapter import init_adapter
from fourier_flax.checkpoint import AdapterMismatchError, load_adapter, save_adapter
from fourier_flax.generation import generate
from fourier_flax.interceptor import intercept
from fourier_flax.merge import merge_adapter, unmerge_adapter
from fourier_flax.methods import DoraConfig, FloraConfig, FourierFTConfig, LoraConfig, SvftConfig, VeraConfig
from fourier_flax.partition import (
    merge_params,
    param_labels,
    print_trainable_parameters,
    split_params,
    trainable_mask,
    trainable_parameter_summary,
)
from fourier_flax.peft_interop import export_peft, import_peft
from fourier_flax.peft_model import PeftModel, get_peft_model
from fourier_flax.targeting import TargetingConfig
from fourier_flax.version import __version__

__all__ = [
    "AdapterMismatchError",
    "DoraConfig",
    "FloraConfig",
    "FourierFTConfig",
    "LoraConfig",
    "PeftModel",
    "SvftConfig",
    "TargetingConfig",
    "VeraConfig",
    "__version__",
    "adapter_module_paths",
    "export_peft",
    "generate",
    "get_peft_model",
    "import_peft",
    "init_adapter",
    "intercept",
    "load_adapter",
    "merge_adapter",
    "merge_params",
    "param_labels",
    "print_trainable_parameters",
    "save_adapter",
    "split_params",
    "trainable_mask",
    "trainable_parameter_summary",
    "unmerge_adapter",
]
