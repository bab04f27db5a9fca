"""Reports people read: the classification report's numbers, the curves PNG, atomic JSON."""

import os

from absl.testing import absltest

from tests import testutil  # noqa: F401
import matplotlib.image

from kmodels import reporting


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
    history = [{"epoch": e, "loss": 1.0 / e, "val_loss": 1.2 / e, "accuracy": 0.5 + e / 10,
                "val_accuracy": 0.4 + e / 10} for e in (1, 2, 3)]
    reporting.plot_curves(history, path, "title")
    image = matplotlib.image.imread(path)
    self.assertEqual(image.shape[:2], (400, 1100))

  def test_a_thousand_class_confusion_matrix_shows_the_most_confused_classes(self):
    names = [f"class{i}" for i in range(1000)]
    labels = list(range(1000)) + [7, 7, 7, 500]
    predictions = list(range(1000)) + [3, 3, 999, 7]  # errors only among 3, 7, 500, 999
    counts = reporting.confusion_matrix(labels, predictions, 1000)
    shown = reporting._most_confused(counts, reporting.MAX_CLASSES_PLOTTED)
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


if __name__ == "__main__":
  absltest.main()
