"""An app module that fails while being imported."""

import this_module_does_not_exist_anywhere  # noqa: F401

app = None
