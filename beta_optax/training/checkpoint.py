"""Checkpoints of the training state through orbax-checkpoint.

A checkpoint contains every array of the train state (params, batch_stats, opt_state, step and the
PRNG key) and a small JSON item with host-side counters such as the training seconds so far.
Saving is synchronous: the train step donates its input buffers, so the state must be written
out before the next step reuses them.
"""

import logging
import os
import pathlib

import orbax.checkpoint as ocp

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"


class Checkpointer:
    """Saves and restores train states in `directory`, keeping the newest `max_to_keep`.

    Args:
        directory: the checkpoint directory; created when missing.
        max_to_keep: how many checkpoints stay on disk.
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 2):
        if max_to_keep < 1:
            raise ValueError(f"`max_to_keep` must be at least 1, got {max_to_keep}.")
        self.directory = pathlib.Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=False, create=True
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """Return the step of the newest checkpoint, or None when there is none."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Return the steps of every checkpoint on disk, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, arrays, metadata: dict) -> None:
        """Write `arrays` (a pytree of jax arrays) and `metadata` (JSON-serializable) at `step`."""
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(arrays), metadata=ocp.args.JsonSave(metadata)
            ),
            force=True,
        )
        self._manager.wait_until_finished()
        logger.info("Saved checkpoint at step %d in %s.", step, self.directory)

    def restore(self, step: int, target):
        """Read the checkpoint at `step` into the structure, dtypes and shardings of `target`.

        Returns:
            `(arrays, metadata)`.
        """
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), metadata=ocp.args.JsonRestore()
            ),
        )
        logger.info("Restored checkpoint at step %d from %s.", step, self.directory)
        return restored["state"], restored["metadata"]

    def close(self) -> None:
        """Finish pending writes and release the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
