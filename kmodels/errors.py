"""The exceptions that end a run with a message instead of a traceback."""


def first_line(error, limit=200):
  """The first line of an exception's message, at most `limit` characters ("" if none):
  what a one-line error quotes of the library error behind it."""
  text = str(error).strip()
  return text.splitlines()[0][:limit] if text else ""


class UserError(Exception):
  """A problem in the user's input, with a message that says what to do about it.

  Launchers print the message without a traceback and exit with `exit_status`; anything
  else that escapes is a bug in kmodels and keeps its traceback.
  """
  exit_status = 2


class TrainingDiverged(UserError):
  """The loss became NaN or infinite; the last good checkpoint and metrics are kept."""
  exit_status = 3


class Preempted(UserError):
  """SIGTERM arrived; a checkpoint of the current step was saved and the run stopped.

  143 = 128 + SIGTERM, what a job killed by SIGTERM reports: schedulers restart on it.
  """
  exit_status = 143


class PeerLost(UserError):
  """A multi-worker job lost a task (killed, preempted, crashed): this worker stops too.

  Not the input's fault and nothing to fix: restarting the job's tasks resumes from the
  last checkpoint. 129 is >= 128, which Kubeflow's `restartPolicy: ExitCode` and Vertex AI
  treat as retryable (1-127 mean a permanent failure); 128 + SIGHUP, "the line dropped".
  """
  exit_status = 129
