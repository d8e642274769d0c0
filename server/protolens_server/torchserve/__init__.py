"""A TorchServe handler that answers prototype requests (see ``handler.py``)."""
