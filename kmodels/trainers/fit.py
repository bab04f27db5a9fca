"""The `fit` trainer: Keras model.fit with BackupAndRestore-style checkpoints (kmodels'
PreemptibleBackup), resumable at every epoch end, every N steps and after SIGTERM."""

from kmodels import callbacks, checkpoints, distribute, faults, models, storage
from kmodels.errors import UserError


def _check_xla(config, strategy):
  devices = distribute.replica_devices(strategy)
  several = strategy.num_replicas_in_sync > 1 and len(devices) > 1
  if config.xla and several and all("CPU" in d.upper() for d in devices):
    # Keras compiles its whole step per replica, but places every replica's XLA cluster on
    # CPU:0, which can't reach CPU:1's variables (xla/known_issues, "tf.Variable on a
    # different device"). GPUs and TPUs are not affected.
    raise UserError("xla=True with the fit trainer can't run over several CPU devices "
                    f"({', '.join(devices)}). Use --config.trainer=custom_loop (it pins each "
                    "replica's XLA cluster to its device) or --config.xla=False.")


def train(run):
  """Trains run.model with model.fit from the newest checkpoint's step (0 if none)."""
  _check_xla(run.config, run.strategy)
  start_step = checkpoints.resume_step(storage.join(run.workdir.checkpoints,
                                                    checkpoints.BACKUP_CHIEF),
                                       run.steps_per_epoch,
                                       repair=not distribute.is_multi_worker(run.strategy))
  freeze_epochs = run.config.model.freeze_backbone_epochs
  freezing = ([callbacks.FreezeBackbone(models.backbone_of(run.model), freeze_epochs)]
              if freeze_epochs else [])
  with faults.sigterm_flag(run.strategy) as sigterm:
    run.model.fit(
        run.datasets.distributed_train(run.strategy, start_step),
        epochs=run.config.train.epochs,
        steps_per_epoch=run.steps_per_epoch,
        validation_data=run.datasets.eval,
        # Last: the others have seen the epoch end when it stops the run.
        callbacks=[
            *freezing, *run.callbacks,
            checkpoints.PreemptibleBackup(run.workdir.checkpoints, run.steps_per_epoch, sigterm,
                                          run.config.train.checkpoint_every_steps, start_step)
        ],
        # Progress and epoch lines are the contract's (callbacks.Progress,
        # EpochLog), the same for every trainer.
        verbose=0)
