"""Runs a LiteRT (.tflite) or ONNX file with its own runtime: numpy in, probabilities out.

Imports neither TensorFlow nor anything else of kmodels, so it is also the proof's client:
`python -I kmodels/tools/runtimes.py MODEL IMAGES.npy OUT.npy` (isolated: not even this
directory on the path) classifies uint8 images [N, H, W, C] with ai-edge-litert's
interpreter or onnxruntime, writes float32 probabilities and prints which of TensorFlow
and kmodels the process imported (neither, or the proof fails).
"""

import json
import sys

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
    outputs = [run(np.ascontiguousarray(images[i:i + BATCH]))
               for i in range(0, len(images), BATCH)]
    return np.concatenate(outputs).astype(np.float32)

  return probabilities


def main(model_path, images_path, out_path):
  np.save(out_path, load(model_path)(np.load(images_path)))
  print(json.dumps({"tensorflow_imported": "tensorflow" in sys.modules,
                    "kmodels_imported": any(m.split(".")[0] == "kmodels" for m in sys.modules)}))


if __name__ == "__main__":
  main(*sys.argv[1:4])
