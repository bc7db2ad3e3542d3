"""The enos Python API on the sample reservation (the local provider: network-namespace
hosts on this machine). Run from the repository, as root, after `bash scripts/quickstart.sh`:

    .venv/bin/python examples/api_example.py

`enos.up` resumes the environment the quickstart brought up (same semantics as `enos up`)
and the `with` block destroys it at the end: run the quickstart again to get it back.
"""
import enos

with enos.up("reservation.yaml.sample") as env:         # same resume/state semantics as `enos up`
    print(env)
    print(env.roles["compute"])                          # hosts by role: alias, address, user, port, extra

    res = env.run("hostname", roles="compute")           # parallel, on the env's SSH masters
    for r in res:                                        # one result per host
        print(r.host.alias, r.rc, r.stdout.strip(), f"{r.duration:.3f}s")

    # a command that fails somewhere: CommandFailed carries every host's result
    try:
        env.run("test $(hostname) != compute-2")
    except enos.errors.CommandFailed as e:
        print("failed on", e.results.failed.aliases, "- fine on", e.results.ok.aliases)

    play = env.play("examples/api_site.yml", extra_vars={"rate": "10mbit"})   # ansible-runner
    print(play)                                          # per host: ok / changed / failed / unreachable

    # local hosts share this machine's filesystem: each one logs under its own scratch dir
    for host in env.roles["compute"]:
        report = env.backup([host.extra["enos_scratch"] + "/var/log/app"], roles=host)
        print(report)                                    # files in <env>/backup/<alias>/...

    print(env.to_json(indent=None)[:200], "...")
print("environment", env.env_dir, env.reload().phase)
