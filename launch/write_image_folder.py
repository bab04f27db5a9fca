r"""Writes a prepared tfds dataset's images as an image folder (DIR/<split>/<class>/N.jpg).

  python -m launch.write_image_folder --dataset=fashion_mnist --out=runs/fmnist_folder \
      --mixed --train_examples=20000 --test_examples=5000
  python -m launch.write_image_folder --dataset=fashion_mnist --out=runs/photos \
      --photo_size=500x375 --train_examples=2000 --test_examples=100

To try `dataset.name=image_folder` on real pictures, or to hand a dataset to tools that
read folders. --mixed gives every file its own size, colour mode and format (JPEG/PNG), as
a folder of photos from many sources has.
"""

from absl import app
from absl import flags
from absl import logging

from kmodels.data import image_folder, preparation
from kmodels.errors import UserError
from launch import common

_DATASET = flags.DEFINE_string("dataset", "fashion_mnist", "A prepared tfds dataset.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Its tfds data_dir (default: tfds').")
_OUT = flags.DEFINE_string("out", None, "The image folder to write (local or gs://).")
_MIXED = flags.DEFINE_bool("mixed", False, "Vary size, colour mode and format per file.")
_PHOTO_SIZE = flags.DEFINE_string(
    "photo_size", None, "WIDTHxHEIGHT, e.g. 500x375 (ImageNet's typical size): every file an "
    "RGB JPEG of that size with camera-like grain, for input benchmarks at photo sizes.")
_TRAIN = flags.DEFINE_integer("train_examples",
                              2000,
                              "Images of the train split to write.",
                              lower_bound=1)
_TEST = flags.DEFINE_integer("test_examples",
                             500,
                             "Images of the test split to write.",
                             lower_bound=1)
flags.mark_flags_as_required(["out"])

_MAX_PHOTO_SIDE = 8192  # as dataset.image_size's bound (validation.MAX_IMAGE_SIZE)


def _parse_size(text):
  try:
    width, height = (int(n) for n in text.lower().split("x"))
  except ValueError:
    width = height = 0
  if not (0 < width <= _MAX_PHOTO_SIDE and 0 < height <= _MAX_PHOTO_SIDE):
    raise UserError(f"--photo_size={text!r}: give WIDTHxHEIGHT, each 1-"
                    f"{_MAX_PHOTO_SIDE}, e.g. 500x375.")
  return width, height


def main(argv):
  common.start(argv)
  with common.user_errors_exit():
    builder = preparation.get_builder(_DATASET.value, _DATA_DIR.value)
    if not preparation.is_prepared(builder):
      raise UserError(f"{_DATASET.value} is not prepared in {builder.data_dir}: run "
                      "launch.prepare_data first.")
    names = list(builder.info.features["label"].names)
    photo_size = _parse_size(_PHOTO_SIZE.value) if _PHOTO_SIZE.value else None
    for split, count in (("train", _TRAIN.value), ("test", _TEST.value)):
      ds = builder.as_dataset(split=f"{split}[:{count}]").map(lambda e: (e["image"], e["label"]))
      written = image_folder.write_images(ds.as_numpy_iterator(),
                                          _OUT.value,
                                          split,
                                          names,
                                          mixed=_MIXED.value,
                                          seed=len(split),
                                          photo_size=photo_size)
      logging.info("Wrote %d %s images into %s/%s/<class>/.", written, split, _OUT.value, split)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
