"""GPU/CPU workers: pull jobs from the queue, batch them, run the engine, store results.

Entry point: ``python -m protolens_server.worker`` / ``protolens_server.worker.main(argv)``.
"""

from protolens_server.worker.main import main
from protolens_server.worker.worker import Worker

__all__ = ["Worker", "main"]
