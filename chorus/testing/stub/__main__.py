"""`python -m chorus.testing.stub --port 0 --latency-ms 200 --fail slot=2:500`: serve until SIGTERM/SIGINT."""

import sys

from chorus.testing.stub.server import main

if __name__ == "__main__":
    sys.exit(main())
