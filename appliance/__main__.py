import sys

from appliance.launch import entry

if __name__ == "__main__":
    sys.exit(entry())
