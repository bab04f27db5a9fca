"""The one exception type for mistakes a user can fix (bad config, missing data, ...)."""


class UserError(Exception):
  """A problem in the user's input, with a message that says what to do about it.

  Launchers print the message without a traceback and exit with status 2; anything
  else that escapes is a bug in kmodels and keeps its traceback.
  """
