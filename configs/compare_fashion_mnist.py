"""The same MLP trained by every kmodels path on Fashion-MNIST (kmodels/docs/estimators.md).

Command (after preparing Fashion-MNIST, README "Data"):
  python -m launch.compare --config=configs/compare_fashion_mnist.py --workdir=runs/compare
Expected: see the README table (measured with its command, machine and date).
Paths: Sequential, Functional and subclassed Keras models (fit), the custom GradientTape
loop, tf.estimator's DNNClassifier, LinearClassifier (the linear baseline) and wide & deep
DNNLinearCombinedClassifier on the pixels, model_to_estimator, then each canned Estimator
migrated to Keras (launch.migrate); the Estimator paths need the full lane.
"""

import ml_collections

from configs import tutorials


def get_config(dataset="fashion_mnist"):
  # The MNIST styles tutorial's recipe (Adam 1e-3, batch 128) on the MLP, with a short budget for
  # all paths.
  config = tutorials.recipe("mlp", dataset, epochs=3, batch_size=128, arg=None)
  config.estimator.hidden_units = (256,)  # the DNNClassifier twin of the MLP
  config.compare = ml_collections.ConfigDict()
  config.compare.paths = ("sequential,functional,subclassed,custom_loop,estimator,"
                          "estimator_linear,estimator_wide_deep,keras_estimator,"
                          "estimator_migrated,estimator_linear_migrated,"
                          "estimator_wide_deep_migrated")
  return config
