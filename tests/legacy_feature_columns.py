"""A user's feature column definitions, as their training code had them (plain TF).

`launch.migrate --feature_columns=tests/legacy_feature_columns.py` reads the two functions;
tests/legacy_estimators.py trains canned Estimators over them. Every column kind a
checkpoint cannot describe is here: a vocabulary list with an OOV bucket, a hash bucket,
identity ids, buckets, a cross, a weighted categorical column, indicator and embedding
(sqrtn and mean) columns, vocabulary files shared by two keys with a shared embedding (sum),
numeric columns of two shapes with a default value and a normalizer_fn.
"""

import os

import tensorflow as tf

fc = tf.feature_column
COUNTRIES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "legacy_countries.txt")


def _categorical():
  age = fc.numeric_column("age", default_value=30.0)
  color = fc.categorical_column_with_vocabulary_list("color", ["red", "green", "blue"],
                                                     num_oov_buckets=1)
  city = fc.categorical_column_with_hash_bucket("city", 20)
  day = fc.categorical_column_with_identity("day", 7, default_value=0)
  age_buckets = fc.bucketized_column(age, [20.0, 40.0, 60.0])
  return age, color, city, day, age_buckets


def _hours():  # a normalizer_fn: Python the checkpoint cannot hold, this file does
  return fc.numeric_column("hours", shape=(2,), normalizer_fn=lambda x: x / 60.0)


def _countries():  # where a user lives and works: one vocabulary file, one OOV bucket
  return [
      fc.categorical_column_with_vocabulary_file(key, COUNTRIES, num_oov_buckets=1)
      for key in ("home", "work")
  ]


def linear_feature_columns():
  age, color, city, day, age_buckets = _categorical()
  hours = _hours()
  tags = fc.weighted_categorical_column(
      fc.categorical_column_with_vocabulary_list("tags", ["a", "b", "c", "d"]), "tag_weight")
  return [
      age, hours, color, city, day, age_buckets,
      fc.crossed_column([color, age_buckets], 12), tags,
      _countries()[0]
  ]


def dnn_feature_columns():
  age, color, city, day, _ = _categorical()
  return [
      age,
      _hours(),
      fc.indicator_column(color),
      fc.embedding_column(city, 4, combiner="sqrtn"),
      fc.embedding_column(day, 3, combiner="mean"), *_shared_country_embeddings()
  ]


def _shared_country_embeddings():
  with tf.Graph().as_default():  # TF 2 makes shared embeddings only in a graph
    return fc.shared_embeddings(_countries(), 2, combiner="sum")
