import sys

from appliance.cli import entry

if __name__ == "__main__":
    sys.exit(entry())
