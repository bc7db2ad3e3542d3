#!/usr/bin/env python3
"""Write examples/notebook/experiment.ipynb (outputs empty) from the cells below: edit the
cells here, run `.venv/bin/python scripts/make_notebook.py`, commit both. Each code cell
carries one tag that tests/test_notebook.py uses to check its outputs."""
from pathlib import Path

import nbformat as nbf

OUT = Path(__file__).resolve().parent.parent / "examples" / "notebook" / "experiment.ipynb"
nb = nbf.v4.new_notebook()
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
def md(t): nb.cells.append(nbf.v4.new_markdown_cell(t))
def code(tag, src): nb.cells.append(nbf.v4.new_code_cell(src, metadata={"tags": [tag]}))
md("""# An experiment with enos, from a notebook

Hosts of the `local` provider (network namespaces of this machine, each with its own sshd),
driven from Jupyter: up, run, Ansible, facts, network constraints, backup, a sweep, destroy.
Run it as root after `bash scripts/quickstart.sh`; `ENOS_NOTEBOOK_BASE` chooses where the
environments go (default: beside the notebook). `tests/test_notebook.py` executes it in a
real Jupyter kernel and checks every output.""")
code("setup", """import asyncio, os, sys
import enos

BASE = os.environ.get("ENOS_NOTEBOOK_BASE", ".")
RESERVATION = {"provider": "local", "resources": {"local": {"server": 1, "client": 2}}}
# a Jupyter kernel runs each cell under a running asyncio loop: enos must work here anyway
try:
    asyncio.get_running_loop()
    print("running loop: yes")
except RuntimeError:
    print("running loop: no")
print("python:", sys.executable)""")
md("Book the hosts (3 network namespaces) and show them:")
code("up", """env = enos.up(RESERVATION, keep=True, base=BASE, provision=False, quiet=True)
env""")
code("run", """res = env.run("hostname")
res""")
md("Ansible modules from Python: one playbook per block, every task's result on every host:")
code("actions", """with env.actions(roles="client") as a:
    a.file(path="{{ enos_scratch }}/notebook", state="directory", mode="0755")
    a.copy(dest="{{ enos_scratch }}/notebook/from-actions.txt", content="{{ inventory_hostname }}\\n")
    a.shell("cat {{ enos_scratch }}/notebook/from-actions.txt", task_changed_when=False)
a.results""")
md("An Ansible playbook beside this notebook, through ansible-runner:")
code("play", """play = env.play("site.yml", extra_vars={"message": "hello from the notebook"}, roles="client")
play""")
code("facts", """facts = env.facts()
facts""")
md("A rate limit between the clients and the server, then measured:")
code("tc", """constraints = {"constraints": [{"src": "client", "dst": "server", "rate": "20mbit", "symmetric": True}]}
env.tc(constraints)""")
code("tc_test", """report = env.tc_test(constraints, check=True)
report""")
code("backup", """backup = env.backup([h.extra["enos_scratch"] + "/notebook" for h in env.roles["client"]], roles="client")
backup""")
md("CPU, memory, disk and network of the hosts during a transfer (exact totals from the counters):")
code("monitor", r"""import time
server = env.roles["server"][0]
SINK = "import socket; s=socket.socket(); s.bind(('%s', 5201)); s.listen(1); c=s.accept()[0]; n=0\nwhile True:\n  b=c.recv(65536)\n  if not b: break\n  n+=len(b)\nprint(n)"
SOURCE = "import socket; socket.create_connection(('%s', 5201)).sendall(b'x' * 2000000)"
sink = env.run(f'python3 -c "{SINK % server.address}"', roles="server", background=True)
time.sleep(0.5)
with env.monitor(interval=0.5) as mon:
    env.run(f'python3 -c "{SOURCE % server.address}"', roles="client-1")
    received = int(sink.wait()[0].stdout)      # the whole transfer is inside the block
print("received", received)
mon""")
code("monitor_df", """df = mon.to_dataframe()
df.groupby("host")[["net_rx_bytes", "net_tx_bytes"]].max()""")
md("A persistent sweep: each run has its own directory and keeps what it measured; run the cell again and it gives back what was measured:")
code("sweep", """def measure():
    loop = env.sweep({"size": [1, 4]}, results=os.path.join(BASE, "sweep"), repeat=2)
    for p in loop:
        r = env.run(f"head -c {p['size']}k /dev/zero | wc -c", roles="server")
        (p.dir / "wc.txt").write_text(r[0].stdout)
        p.record(bytes=int(r[0].stdout))
    return loop
loop = measure()
loop""")
code("sweep_again", """again = measure()        # nothing left to do: the measurements are still there
print("ran", again.ran)
again.to_dataframe()""")
code("destroy", """env.destroy()
env.phase""")
md("The same in a `with` block (destroyed at its end), and `enos.destroy` of an env kept by `up`:")
code("with", """with enos.up(RESERVATION, base=os.path.join(BASE, "with"), provision=False, quiet=True) as env2:
    print(env2.run("hostname", roles="server").stdout)
print(env2.reload().phase)
env3 = enos.up(RESERVATION, keep=True, base=os.path.join(BASE, "kept"), provision=False, quiet=True)
print(enos.destroy(base=os.path.join(BASE, "kept"), quiet=True).phase)""")
code("campaign", """import enos.campaign
campaign = {
    "name": "notebook campaign",
    "reservation": RESERVATION,
    "parameters": {"size": [1, 2]},
    "steps": [{"roles": ["client"], "run": "head -c {{ size }}k /dev/zero | wc -c", "collect": "stdout"}],
    "metrics": {"bytes": {"regex": "([0-9]+)"}},
}
counts = enos.campaign.run(campaign, results=os.path.join(BASE, "campaign"), destroy=True)
counts""")
nbf.write(nb, str(OUT))
