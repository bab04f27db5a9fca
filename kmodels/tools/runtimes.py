"""Runs a LiteRT (.tflite) or ONNX file with its own runtime: numpy in, probabilities out.

Imports neither TensorFlow nor anything else of kmodels, so it is also the proof's client:
`python -I kmodels/tools/runtimes.py MODEL IMAGES.npy OUT.npy` (isolated: not even this
directory on the path) classifies uint8 images [N, H, W, C] with ai-edge-litert's
interpreter or onnxruntime, writes float32 probabilities and prints which of TensorFlow
and kmodels the process imported (neither, or the proof fails). `--latency MODEL IMAGE.npy`
prints one image's median classification time instead; `--idx MODEL IMAGES LABELS` the
top-1 accuracy on MNIST-format idx files (Fashion-MNIST's own test files). The file stands
alone: copied to a device with numpy and the runtime, it runs there as it is.
"""

import gzip
import json
import sys
import time

import numpy as np

BATCH = 64


def load(model_path):
  """A function: uint8 images [N, H, W, C] -> float32 probabilities [N, classes]."""
  if model_path.endswith(".onnx"):
    import onnxruntime  # pylint: disable=g-import-not-at-top
    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    run = lambda batch: session.run(None, {name: batch})[0]
  else:
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
    interpreter = Interpreter(model_path=model_path)
    (source,), (sink,) = interpreter.get_input_details(), interpreter.get_output_details()
    scale, zero_point = source["quantization"]

    def run(batch):
      interpreter.resize_tensor_input(source["index"], batch.shape)
      interpreter.allocate_tensors()
      if scale not in (0.0, 1.0) or zero_point != 0:  # a quantized input: raw pixels -> q
        batch = np.round(batch / scale + zero_point)
      interpreter.set_tensor(source["index"], batch.astype(source["dtype"]))
      interpreter.invoke()
      return interpreter.get_tensor(sink["index"])

  def probabilities(images):
    outputs = [run(np.ascontiguousarray(images[i:i + BATCH])) for i in range(0, len(images), BATCH)]
    return np.concatenate(outputs).astype(np.float32)

  return probabilities


def latency_ms(model_path, image, repeats=200):
  """Median milliseconds to classify one image (after 10 warm-up calls), in this process."""
  probabilities = load(model_path)
  batch = image[np.newaxis]
  for _ in range(10):
    probabilities(batch)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    probabilities(batch)
    times.append(time.perf_counter() - start)
  return 1000 * float(np.median(times))


def _imports():
  return {
      "tensorflow_imported": "tensorflow" in sys.modules,
      "kmodels_imported": any(m.split(".")[0] == "kmodels" for m in sys.modules)
  }


def read_idx(path):
  """An MNIST-format idx file (gzipped or not) as a numpy array: images [N, H, W, 1] uint8
  or labels [N]."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  dims = data[3]
  shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
  array = np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)
  return array[..., np.newaxis] if dims == 3 else array


def main(argv):
  if argv[0] == "--latency":  # --latency MODEL IMAGE.npy: one image's median milliseconds
    print(json.dumps(dict(_imports(), latency_ms=latency_ms(argv[1], np.load(argv[2])))))
    return
  if argv[0] == "--idx":  # --idx MODEL IMAGES.idx[.gz] LABELS.idx[.gz]: top-1 accuracy
    images, labels = read_idx(argv[2]), read_idx(argv[3])
    accuracy = float(np.mean(load(argv[1])(images).argmax(-1) == labels))
    print(json.dumps(dict(_imports(), images=len(labels), accuracy=accuracy)))
    return
  model_path, images_path, out_path = argv[:3]
  np.save(out_path, load(model_path)(np.load(images_path)))
  print(json.dumps(_imports()))


if __name__ == "__main__":
  main(sys.argv[1:])
