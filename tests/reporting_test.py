"""Reports people read: the classification report's numbers, the curves PNG, atomic JSON."""

import os
import re

from absl.testing import absltest

from tests import testutil
import matplotlib.image
import tensorflow as tf

from kmodels import reporting, training


class ReportingTest(absltest.TestCase):

  def test_classification_report_numbers(self):
    labels = [0, 0, 0, 1, 1, 2]
    predictions = [0, 0, 1, 1, 2, 2]
    report = reporting.classification_report(labels, predictions, ["cat", "dog", "bird"])
    rows = {line.split()[0]: line.split()[1:] for line in report.splitlines() if line.strip()}
    # cat: 2 of 2 predicted right (p=1), 2 of 3 found (r=2/3), f1=0.8, support 3.
    self.assertEqual(rows["cat"], ["1.0000", "0.6667", "0.8000", "3"])
    self.assertEqual(rows["dog"], ["0.5000", "0.5000", "0.5000", "2"])
    self.assertEqual(rows["bird"], ["0.5000", "1.0000", "0.6667", "1"])
    self.assertEqual(rows["accuracy"], ["0.6667", "6"])

  def test_class_never_predicted_has_zero_precision_not_a_crash(self):
    report = reporting.classification_report([0, 1], [0, 0], ["a", "b"])
    self.assertIn("b     0.0000    0.0000    0.0000         1", report)

  def test_curves_png_has_both_panels(self):
    path = os.path.join(self.create_tempdir().full_path, "curves.png")
    history = [{
        "epoch": e,
        "loss": 1.0 / e,
        "val_loss": 1.2 / e,
        "accuracy": 0.5 + e / 10,
        "val_accuracy": 0.4 + e / 10
    } for e in (1, 2, 3)]
    reporting.plot_curves(history, path, "title")
    image = matplotlib.image.imread(path)
    self.assertEqual(image.shape[:2], (400, 1100))

  def test_a_thousand_class_confusion_matrix_shows_the_most_confused_classes(self):
    names = [f"class{i}" for i in range(1000)]
    labels = list(range(1000)) + [7, 7, 7, 500]
    predictions = list(range(1000)) + [3, 3, 999, 7]  # errors only among 3, 7, 500, 999
    counts = reporting.confusion_matrix(labels, predictions, 1000)
    shown = reporting.most_confused(counts, reporting.MAX_CLASSES_PLOTTED)
    self.assertLen(shown, reporting.MAX_CLASSES_PLOTTED)
    self.assertContainsSubset({3, 7, 500, 999}, set(shown.tolist()))
    path = os.path.join(self.create_tempdir().full_path, "confusion.png")
    reporting.plot_confusion_matrix(labels, predictions, names, path, "title")
    height, width = matplotlib.image.imread(path).shape[:2]
    self.assertLess(max(height, width), 3000)  # 30 classes' worth, not 1000

  def test_write_json_replaces_atomically_and_leaves_no_temp_files(self):
    directory = self.create_tempdir().full_path
    path = os.path.join(directory, "m.json")
    reporting.write_json(path, {"a": 1})
    reporting.write_json(path, {"a": 2})
    self.assertEqual(reporting.read_json(path, None), {"a": 2})
    self.assertEqual(os.listdir(directory), ["m.json"])


def _events(directory):
  """Every summary value in the event files under `directory`, with its step."""
  values = []
  for path in tf.io.gfile.glob(os.path.join(directory, "**", "events.out.tfevents.*")) + \
      tf.io.gfile.glob(os.path.join(directory, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      values += [(event.step, value) for value in event.summary.value]
  return values


class RunTrackingTest(absltest.TestCase):
  """TensorBoard beyond epoch scalars: HParams to compare runs, and profile traces."""

  def test_a_run_writes_its_hyperparameters_and_final_metrics_for_the_hparams_tab(self):
    from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=g-import-not-at-top
    config = testutil.tiny_config(dataset__source="synthetic",
                                  model__name="mlp",
                                  train__label_smoothing=0.1)
    workdir = self.create_tempdir().full_path
    metrics = training.train_and_evaluate(config, workdir)
    values = _events(os.path.join(workdir, "tensorboard", "hparams"))
    session = [
        plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
        for _, v in values
        if v.metadata.plugin_data.plugin_name == "hparams"
    ]
    starts = [d.session_start_info for d in session if d.HasField("session_start_info")]
    self.assertLen(starts, 1)
    hparams = starts[0].hparams
    self.assertEqual(hparams["model.name"].string_value, "mlp")
    self.assertEqual(hparams["train.batch_size"].number_value, 8)
    self.assertAlmostEqual(hparams["train.label_smoothing"].number_value, 0.1)
    self.assertEqual(hparams["precision"].string_value, "float32")
    self.assertTrue(any(d.HasField("experiment") for d in session))
    scalars = {
        v.tag: float(tf.make_ndarray(v.tensor))
        for _, v in values
        if v.tag in reporting.HPARAMS_METRICS
    }
    self.assertAlmostEqual(scalars["test_accuracy"], metrics["test_accuracy"], places=6)
    self.assertAlmostEqual(scalars["test_loss"], metrics["test_loss"], places=5)

  def test_profile_steps_leave_a_trace_of_those_steps(self):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
    config = testutil.tiny_config(dataset__source="synthetic",
                                  model__name="mlp",
                                  train__steps_per_epoch=6,
                                  train__profile_steps=(2, 4))
    workdir = self.create_tempdir().full_path
    training.train_and_evaluate(config, workdir)
    traces = tf.io.gfile.glob(
        os.path.join(workdir, "tensorboard", "plugins", "profile", "*", "*.xplane.pb"))
    self.assertLen(traces, 1)
    space = xplane_pb2.XSpace()
    with open(traces[0], "rb") as f:
      space.ParseFromString(f.read())
    names = {
        plane.event_metadata[e.metadata_id].name
        for plane in space.planes
        for line in plane.lines
        for e in line.events
    }
    self.assertTrue(any("train_function" in n or "MatMul" in n for n in names), sorted(names)[:20])
    # The pinned TensorBoard profile plugin opens it: its overview page of those steps
    # finds the TF ops they ran on the host. (Tool names end with "^" in older releases.)
    converter = _profile_plugin_converter()
    (overview,) = [
        t for t in converter.xspace_to_tool_names(traces) if t.rstrip("^") == "overview_page"
    ]
    page, _ = converter.xspace_to_tool_data(traces, overview, {})
    host_ops = re.search(r'"host_tf_op_percent": ?"([\d.]+)%"',
                         page if isinstance(page, str) else page.decode())
    self.assertGreater(float(host_ops.group(1)), 0)


def _profile_plugin_converter():
  """tensorboard-plugin-profile's converter (moved into its xprof package from 2.19.6)."""
  try:
    from xprof.convert import raw_to_tool_data  # pylint: disable=g-import-not-at-top
  except ImportError:
    from tensorboard_plugin_profile.convert import raw_to_tool_data  # pylint: disable=g-import-not-at-top
  return raw_to_tool_data


if __name__ == "__main__":
  absltest.main()
