import sys

from kubeinfer.worker.simulated.main import main

sys.exit(main())
