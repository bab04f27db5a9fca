"""The legacy side: reading tf.estimator model_dirs, migrating them to Keras."""
