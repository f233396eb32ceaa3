"""A tqdm progress bar for the training loop; scripts create it, the library never prints."""

import sys

import tqdm


class TqdmProgress:
    """Shows step, loss, accuracy, learning rate and momentum on a tqdm bar (stderr).

    Args:
        description: text before the bar, such as "sgd seed 0".
        position: line of the bar when several processes share one terminal.
        min_interval: minimum seconds between redraws; raise it when stderr goes to a file.
    """

    def __init__(self, description: str = "", *, position: int = 0, min_interval: float = 0.5):
        self.description = description
        self.position = position
        self.min_interval = min_interval
        self._bar = None

    def start(self, total: int, initial: int) -> None:
        self._bar = tqdm.tqdm(
            total=total,
            initial=initial,
            desc=self.description,
            position=self.position,
            mininterval=self.min_interval,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def update(self, step: int, scalars: dict) -> None:
        self._bar.set_postfix(
            loss=f"{scalars['train_loss']:.3f}",
            acc=f"{scalars['train_accuracy']:.3f}",
            lr=f"{scalars['train_learning_rate']:.4f}",
            mom=f"{scalars['train_momentum']:.3f}",
            refresh=False,
        )
        self._bar.update(step - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
