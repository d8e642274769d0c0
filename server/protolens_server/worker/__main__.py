import sys

from protolens_server.worker.main import main

sys.exit(main())
