# edgeai-fleet: stand-in for pip's get-pip.py, used by tests/sanity/run.
# ansible-test runs get-pip.py to put pip into the empty venvs it makes; the real script is
# downloaded from a host this machine cannot reach. This one bootstraps pip with the
# interpreter's own ensurepip, then installs the packages ansible-test asked for.
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
subprocess.check_call([sys.executable, "-m", "pip", "install", *args])
