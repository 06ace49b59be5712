"""Resumable training: the state of a :class:`~fourier_flax.finetune.causal_lm.CausalLMTrainer` on disk.

:func:`save_trainer_state` writes the adapter leaves, the optimizer state, the step count and the rate and scaling
(plus any ``arrays`` and JSON ``meta`` of the caller's, e.g. the best adapter so far and an evaluation trace) as one
orbax step; :func:`restore_trainer_state` puts them back into a trainer built the same way, so a killed run goes on
from its last save and ends where the uninterrupted run would (same data order: skip the batches already seen).

Saves are atomic (orbax writes a temporary directory and renames it; the previous step is deleted only after):
a save killed half-way leaves the previous state loadable.

Example::

  trainer = CausalLMTrainer(model, learning_rate=1e-2, warmup_steps=30, total_steps=300)
  restored = restore_trainer_state("runs/point", trainer, arrays_like={"best": trainer.snapshot()})
  start = 0 if restored is None else trainer.steps_taken
  for step, batch in enumerate(itertools.islice(batches, start, 300), start + 1):
      trainer.step(batch)
      if step % 50 == 0:
          save_trainer_state("runs/point", trainer, arrays={"best": trainer.snapshot()}, meta={"note": "..."})
"""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
import orbax.checkpoint as ocp

if TYPE_CHECKING:
    from fourier_flax.finetune.causal_lm import CausalLMTrainer

STATE_ITEM, META_ITEM = "state", "meta"


def _manager(path: pathlib.Path) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1, enable_async_checkpointing=False, create=True, cleanup_tmp_directories=True
    )
    return ocp.CheckpointManager(path.absolute(), options=options, item_names=(STATE_ITEM, META_ITEM))


def _host(tree: Any) -> Any:
    return jax.tree.map(np.asarray, tree)


def save_trainer_state(
    path: str | pathlib.Path, trainer: CausalLMTrainer, *, arrays: Any = None, meta: dict[str, Any] | None = None
) -> None:
    """Writes ``trainer``'s adapter leaves, optimizer state, step count, rate and scaling to ``path`` (one orbax
    step numbered by the step count; the previous one is removed once this one is complete).

    Args:
      path: the state directory (created if needed).
      trainer: a :class:`~fourier_flax.finetune.causal_lm.CausalLMTrainer`.
      arrays: a pytree of arrays of the caller's to keep with it (restored by ``arrays_like``).
      meta: JSON-serialisable fields of the caller's.
    """
    state = {"params": _host(trainer.params), "opt_state": _host(trainer.opt_state), "arrays": _host(arrays or {})}
    fields = {
        "steps_taken": trainer.steps_taken,
        "base_rate": trainer.base_rate,
        "scaling": None if trainer.scaling is None else float(trainer.scaling),
        "meta": meta or {},
    }
    manager = _manager(pathlib.Path(path))
    manager.save(
        trainer.steps_taken,
        args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(state), META_ITEM: ocp.args.JsonSave(fields)}),
    )
    manager.close()


def restore_trainer_state(
    path: str | pathlib.Path, trainer: CausalLMTrainer, *, arrays_like: Any = None
) -> tuple[Any, dict[str, Any]] | None:
    """Puts the state saved at ``path`` back into ``trainer``; returns ``(arrays, meta)`` or None when ``path``
    holds no saved state.

    Args:
      path: a directory written by :func:`save_trainer_state`.
      trainer: a trainer built as the saved one was (same model, adapter, rate and scaling).
      arrays_like: a pytree shaped as the saved ``arrays`` (e.g. ``{"best": trainer.snapshot()}``).

    Raises:
      ValueError: the saved rate or scaling differs from ``trainer``'s (the state belongs to another run).
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        return None
    manager = _manager(path)
    step = manager.latest_step()
    if step is None:
        manager.close()
        return None
    target = {
        "params": _host(trainer.params),
        "opt_state": _host(trainer.opt_state),
        "arrays": _host(arrays_like or {}),
    }
    restored = manager.restore(
        step,
        args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(target), META_ITEM: ocp.args.JsonRestore()}),
    )
    manager.close()
    fields = restored[META_ITEM]
    scaling = None if trainer.scaling is None else float(trainer.scaling)
    if fields["base_rate"] != trainer.base_rate or fields["scaling"] != scaling:
        raise ValueError(
            f"{path} holds the state of a run at rate {fields['base_rate']} and scaling {fields['scaling']}, not "
            f"this trainer's {trainer.base_rate} and {scaling}: remove it or give this run another directory."
        )
    state = restored[STATE_ITEM]
    trainer.params = jax.tree.map(jax.numpy.asarray, state["params"])
    trainer.opt_state = jax.tree.map(jax.numpy.asarray, state["opt_state"])
    trainer.steps_taken = fields["steps_taken"]
    return state["arrays"], fields["meta"]
