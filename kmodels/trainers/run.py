"""What every trainer takes (a Run) and returns (an Outcome)."""

import typing

import numpy as np
import tensorflow as tf

from kmodels import callbacks as callbacks_lib  # `callbacks` names a Run field
from kmodels import data
from kmodels.workdir import Workdir


class Run(typing.NamedTuple):
  """Everything a trainer needs; built once by train_and_evaluate."""
  config: typing.Any
  workdir: Workdir
  strategy: tf.distribute.Strategy
  datasets: data.Datasets
  history: callbacks_lib.EpochHistory
  steps_per_epoch: int
  timer: callbacks_lib.FirstStepTimer
  # The epoch-end contract (callbacks.epoch_contract) plus any the caller added.
  callbacks: typing.Sequence[tf.keras.callbacks.Callback] = ()
  model: typing.Optional[tf.keras.Model] = None  # Keras trainers only
  trainer: typing.Any = None  # this trainer's row of kmodels.trainers.TABLE


class Outcome(typing.NamedTuple):
  """What every trainer returns: test metrics, predicted test classes, model size."""
  test_loss: float
  test_accuracy: float
  predicted_classes: np.ndarray
  parameters: int
  test_top5_accuracy: typing.Optional[float] = None  # with models.TOP5_MIN_CLASSES classes
