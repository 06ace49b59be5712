"""fourier_flax: FourierFT (Gao et al., ICML 2024) for JAX/Flax."""

from fourier_flax.adapter import adapter_module_paths, init_adapter
from fourier_flax.checkpoint import AdapterMismatchError, load_adapter, save_adapter
from fourier_flax.config import FourierFTConfig, LoraConfig
from fourier_flax.entries import (
    bandpass_probability,
    frequency_biased_entries,
    peft_entries,
    uniform_entries,
)
from fourier_flax.interceptor import intercept
from fourier_flax.lora import lora_delta_w
from fourier_flax.merge import merge_adapter, unmerge_adapter
from fourier_flax.methods import DoraConfig, FloraConfig, SvftConfig, VeraConfig
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
from fourier_flax.spectral import delta_w, delta_w_reference
from fourier_flax.spectral_grad import adapted_matmul, choose_backward
from fourier_flax.training import (
    classification_loss,
    linear_warmup_decay,
    make_eval_step,
    make_optimizer,
    make_train_step,
    regression_loss,
)

__version__ = "0.1.0"

__all__ = [
    "AdapterMismatchError",
    "DoraConfig",
    "FloraConfig",
    "FourierFTConfig",
    "LoraConfig",
    "VeraConfig",
    "PeftModel",
    "SvftConfig",
    "adapted_matmul",
    "adapter_module_paths",
    "bandpass_probability",
    "choose_backward",
    "classification_loss",
    "delta_w",
    "delta_w_reference",
    "export_peft",
    "frequency_biased_entries",
    "get_peft_model",
    "import_peft",
    "init_adapter",
    "intercept",
    "linear_warmup_decay",
    "load_adapter",
    "lora_delta_w",
    "make_eval_step",
    "make_optimizer",
    "make_train_step",
    "merge_adapter",
    "merge_params",
    "param_labels",
    "peft_entries",
    "print_trainable_parameters",
    "regression_loss",
    "save_adapter",
    "split_params",
    "trainable_mask",
    "trainable_parameter_summary",
    "uniform_entries",
    "unmerge_adapter",
]
