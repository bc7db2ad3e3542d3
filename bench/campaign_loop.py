"""Inner loop of the ``campaign`` bench case, run in its own interpreter (the venv's).

Usage: campaign_loop.py ENV_DIR STEPS MODE RESULTS_DIR COMMAND

MODE ``loop``: STEPS × ``env.run(COMMAND)`` (the command itself, through the experiment API:
the baseline); ``sweep``: the same inside ``for p in env.sweep({"i": range(STEPS)}, RESULTS)``;
``sweep-monitor``: the same inside ``with env.monitor(...)`` (when this enos has it).
Prints one JSON line {"seconds", "steps", "mode"}: the time of the loop only (interpreter
start-up and ``import enos`` excluded, the sweep's and monitor's set-up included). Exits 3
when the mode is not available in this enos (no ``env.monitor``)."""
import json
import sys
import time


def main() -> int:
    """Run the loop once; return the exit code."""
    env_dir, steps, mode, results, command = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    import enos
    env = enos.load(env_dir)
    env.run(command)                  # warm: masters open, modules loaded
    if mode == "sweep-monitor" and not hasattr(env, "monitor"):
        print(json.dumps({"mode": mode, "missing": "env.monitor"}))
        return 3
    t = time.perf_counter()
    if mode == "loop":
        for _ in range(steps):
            env.run(command)
    elif mode == "sweep":
        for _p in env.sweep({"i": list(range(steps))}, results=results):
            env.run(command)
    else:
        with env.monitor():
            for _p in env.sweep({"i": list(range(steps))}, results=results):
                env.run(command)
    dt = time.perf_counter() - t
    print(json.dumps({"seconds": dt, "steps": steps, "mode": mode}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
