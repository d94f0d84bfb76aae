"""Profiles ansible-playbook and each of its forked workers with cProfile on CPU time, when
EDGEAI_PROFILE_DIR is set (benchmarks/rollout/bench.py --profile puts this folder on PYTHONPATH).
Each process writes <kind>-<pid>-<its own CPU seconds>.prof there."""

import os
import sys

_DIR = os.environ.get("EDGEAI_PROFILE_DIR")
if _DIR and sys.argv and sys.argv[0].endswith("ansible-playbook"):
    import atexit
    import cProfile
    import multiprocessing.process
    import signal
    import time

    def _dump(profile, kind):
        profile.disable()
        # the main process ends its workers with SIGTERM: not before the profile is written
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        path = os.path.join(_DIR, f"{kind}-{os.getpid()}-{time.process_time():.4f}.prof")
        profile.dump_stats(path + ".tmp")
        os.replace(path + ".tmp", path)  # a process killed meanwhile leaves no half profile

    _boot = multiprocessing.process.BaseProcess._bootstrap

    def _bootstrap(self, *args, **kwargs):
        profile = cProfile.Profile(time.process_time)
        profile.enable()
        try:
            return _boot(self, *args, **kwargs)
        finally:
            _dump(profile, "worker")

    multiprocessing.process.BaseProcess._bootstrap = _bootstrap
    _main = cProfile.Profile(time.process_time)
    atexit.register(_dump, _main, "main")
    _main.enable()
