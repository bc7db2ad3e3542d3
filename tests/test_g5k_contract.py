"""Contract: python-grid5000's OWN objects (the real client enos uses) read every answer the
fake Grid'5000 API (tests/g5kserver.py) gives, and those answers have the shapes
../shared/g5k-reference/API-SHAPES.md documents, over the REAL reference data (every site,
cluster and node of the snapshot)."""
import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from g5kmodel import paris_date  # noqa: E402
from g5kref import fqdn, kavlan_adapters, need_reference  # noqa: E402
from g5kserver import FakeG5k  # noqa: E402
from prereq import need_module  # noqa: E402

PASSWORD = "contract-pw"


@pytest.fixture(scope="module")
def ref():
    return need_reference()


@pytest.fixture(scope="module")
def server(ref):
    srv = FakeG5k(users={"alice": PASSWORD, "bob": "bob-pw"}, waiting_s=0.3, launching_s=0.05,
                  deploy_s=0.2, reference=ref)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def gk(server):
    grid5000 = need_module("grid5000")
    return grid5000.Grid5000(uri=server.url, username="alice", password=PASSWORD)


def raw(server, path, user="alice", pw=PASSWORD, method="GET", **kw):
    """The HTTP answer itself (requests), to check what the client hides."""
    import requests
    return requests.request(method, server.url + path, auth=(user, pw), timeout=10,
                            headers={"Accept": "application/json"}, **kw)


def no_nulls(value, where="") -> list:
    """Return the paths of null values (fields must be left out instead)."""
    if value is None:
        return [where]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in no_nulls(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in no_nulls(v, f"{where}[{i}]")]
    return []


def wait_state(job, states, timeout=10.0):
    end = time.time() + timeout
    while job.state not in states:
        assert time.time() < end, f"job {job.uid} still {job.state}"
        time.sleep(0.05)
        job.refresh()


# --- reference data ----------------------------------------------------------------------------

def test_every_site_cluster_and_node_of_the_data_is_served_unchanged(gk, ref):
    sites = gk.sites.list()
    assert [s.uid for s in sites] == ref.site_uids == ["grenoble", "lyon", "nancy", "rennes"]
    n_clusters = n_nodes = 0
    for site in sites:
        assert site.kavlans == ref.site(site.uid)["kavlans"]
        for cluster in site.clusters.list():
            assert cluster.site == site.uid          # from the parent, as the real client does
            assert cluster.queues == ref.cluster(site.uid, cluster.uid)["queues"]
            nodes = cluster.nodes.list()
            expected = ref.nodes(site.uid, cluster.uid)
            assert [n.uid for n in nodes] == [n["uid"] for n in expected]
            for got, want in zip(nodes, expected):
                data = got.to_dict()
                assert {k: v for k, v in data.items() if k not in ("links", "version")} == want
            n_clusters += 1
            n_nodes += len(nodes)
    assert (n_clusters, n_nodes) == (91, 617)
    gros1 = gk.sites["nancy"].clusters["gros"].nodes["gros-1"]
    eth1 = [a for a in gros1.network_adapters if a["device"] == "eth1"][0]
    assert eth1["network_address"] == "gros-1-eth1.nancy.grid5000.fr" and eth1["kavlan"] and not eth1["mounted"]


def test_collections_items_and_errors_have_the_documented_shapes(server):
    root = raw(server, "/").json()
    assert root["uid"] == "grid5000" and any(l["rel"] == "sites" for l in root["links"])
    for path in ("/sites", "/sites/nancy/clusters", "/sites/nancy/clusters/gros/nodes", "/sites/nancy/vlans",
                 "/sites/nancy/jobs", "/sites/nancy/deployments", "/sites/nancy/vlans/nodes"):
        r = raw(server, path)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
        body = r.json()
        assert set(body) == {"total", "offset", "items", "links"}, path
        assert all("links" in i for i in body["items"]), path
        if "clusters" not in path:    # the reference files themselves hold some nulls (served as is)
            assert not no_nulls(body), (path, no_nulls(body)[:3])
    # without Accept: application/json, the API's own media types
    import requests
    r = requests.get(server.url + "/sites", auth=("alice", PASSWORD), headers={"Accept": "*/*"})
    r2 = requests.get(server.url + "/sites/nancy", auth=("alice", PASSWORD),
                      headers={"Accept": "application/vnd.grid5000.item+json"})
    assert r2.headers["Content-Type"] == "application/vnd.grid5000.item+json"
    assert r.status_code == 200
    # errors are plain text
    for path, code, text in (("/sites/nowhere", 404, "Couldn't find site"),
                             ("/sites/nancy/jobs/999999", 404, "Couldn't find OAR::Job with 'job_id'=999999"),
                             ("/sites/nancy/vlans/nodes/nosuch.nancy.grid5000.fr", 404, "Unknown node")):
        r = raw(server, path)
        assert r.status_code == code and r.headers["Content-Type"].startswith("text/plain") and text in r.text
    r = raw(server, "/sites", pw="wrong")
    assert r.status_code == 401 and r.headers["Content-Type"].startswith("text/plain")


def test_client_errors_carry_the_plain_text(gk, server):
    from grid5000.exceptions import Grid5000AuthenticationError, Grid5000GetError
    with pytest.raises(Grid5000GetError) as e:
        gk.sites["nancy"].jobs[424242]
    assert e.value.response_code == 404 and "Couldn't find OAR::Job" in e.value.error_message
    import grid5000
    bad = grid5000.Grid5000(uri=server.url, username="alice", password="x")
    with pytest.raises(Grid5000AuthenticationError):
        bad.sites.list()


# --- jobs, walltime, status ------------------------------------------------------------------

def test_job_cycle_read_by_the_client(gk, server):
    site = gk.sites["rennes"]
    job = site.jobs.create({"name": "contract", "command": "sleep 1d", "types": ["deploy"],
                            "resources": "{cluster='parasilo'}/nodes=2+{type='kavlan'}/vlan=1,walltime=1:00"})
    assert isinstance(job.uid, int) and job.state == "waiting"
    assert job.assigned_nodes == ["parasilo-1.rennes.grid5000.fr", "parasilo-2.rennes.grid5000.fr"]
    rbt = job.resources_by_type
    assert set(rbt) == {"cores", "vlans"} and rbt["vlans"] == ["4"]
    assert rbt["cores"][0] == "parasilo-1.rennes.grid5000.fr/0" and len(rbt["cores"]) == 2 * 16
    assert not hasattr(job, "stopped_at") and job.started_at == 0 and job.scheduled_at >= job.submitted_at
    wait_state(job, ("running",))
    assert job.started_at > 0 and job.walltime == 3600
    listed = site.jobs.list(name="contract", state="waiting,launching,running", user="alice")
    assert [j.uid for j in listed] == [job.uid]
    assert not hasattr(listed[0], "assigned_nodes")            # lists omit resources (resources=no)
    wt = job.walltime_change.get()
    assert wt.walltime == "1:00:00"
    job.walltime_change.create({"walltime": "+0:30"})
    assert job.walltime_change.get().walltime == "1:30:00"
    job.refresh()
    assert job.walltime == 5400
    r = raw(server, f"/sites/rennes/jobs/{job.uid}")
    assert not no_nulls(r.json())
    job.delete()
    job.refresh()
    assert job.state == "error" and job.stopped_at >= job.started_at
    r = raw(server, f"/sites/rennes/jobs/{job.uid}", method="DELETE")
    assert r.status_code == 400 and "already killed" in r.text


def test_delete_answer_is_202_with_oar_info(server, gk):
    job = gk.sites["lyon"].jobs.create({"command": "sleep 1d", "resources": "{cluster='nova'}/nodes=1"})
    r = raw(server, f"/sites/lyon/jobs/{job.uid}", method="DELETE")
    assert r.status_code == 202 and r.text == "" and "REGISTERED" in r.headers["X-Oar-Info"]
    assert r.headers["Location"].endswith(f"/sites/lyon/jobs/{job.uid}")
    other = raw(server, f"/sites/lyon/jobs/{job.uid}", user="bob", pw="bob-pw", method="DELETE")
    assert other.status_code == 403


def test_status_read_by_the_client(gk, server):
    busy = server.seed_job("grenoble", cluster="dahu", count=3, start=time.time() - 60, walltime=7200)
    later = server.seed_job("grenoble", cluster="dahu", count=1, start=time.time() + 3600, walltime=600, name="later")
    st = gk.sites["grenoble"].status.list()
    assert set(st.to_dict()) == {"uid", "links", "nodes", "disks", "vlans", "subnets"}
    assert len(st.nodes) == 111 and all(k.endswith(".grenoble.grid5000.fr") for k in st.nodes)
    d1 = st.nodes["dahu-1.grenoble.grid5000.fr"]
    assert d1["soft"] == "busy" and d1["hard"] == "alive" and d1["busy_slots"] == 32
    res = {r["uid"]: r for r in d1["reservations"]}
    assert set(res) == {busy["uid"], later["uid"]}
    assert res[later["uid"]]["state"] == "waiting" and "assigned_nodes" not in res[later["uid"]]
    assert "events" not in res[busy["uid"]] and res[busy["uid"]]["started_at"] > 0
    assert st.nodes["dahu-5.grenoble.grid5000.fr"]["soft"] == "free"
    assert "disk1.yeti-1.grenoble.grid5000.fr" in st.disks
    assert st.vlans["4"]["type"] == "kavlan" and st.vlans["11"]["type"] == "kavlan-global"
    assert "10.132.0.0/22" in st.subnets or len(st.subnets) > 200
    cl = gk.sites["grenoble"].clusters["dahu"].status.list()
    assert set(cl.to_dict()) == {"uid", "links", "nodes", "disks"} and len(cl.nodes) == 32
    waiting_no = raw(server, "/sites/grenoble/status?waiting=no&disks=no&vlans=no&subnets=no").json()
    assert set(waiting_no) == {"uid", "links", "nodes"}
    assert [r["uid"] for r in waiting_no["nodes"]["dahu-1.grenoble.grid5000.fr"]["reservations"]] == [busy["uid"]]
    no_details = raw(server, "/sites/grenoble/status?job_details=no").json()
    assert "reservations" not in no_details["nodes"]["dahu-1.grenoble.grid5000.fr"]


def test_refusals_are_oar_texts(gk, server):
    from grid5000.exceptions import Grid5000CreateError
    site = gk.sites["lyon"]
    server.seed_job("lyon", cluster="taurus", walltime=4 * 3600)
    at = time.time() + 1800
    with pytest.raises(Grid5000CreateError) as e:
        site.jobs.create({"name": "late", "reservation": paris_date(at),
                          "resources": "{cluster='taurus'}/nodes=2,walltime=1:00"})
    msg = e.value.error_message
    assert e.value.response_code == 400 and msg.startswith("Request to ") and "failed with status 400: " in msg
    oar = json.loads(msg.split("failed with status 400: ", 1)[1])
    assert oar["title"] == "Bad query" and "# Reservation not valid --> KO (This reservation could run at " in oar["message"]
    for resources, text in (("{cluster='taurus'}/nodes=99", "There are not enough resources"),
                            ("{cluster='grele'}/nodes=1", "no cluster 'grele' on lyon"),
                            ("{cluster='sirius'}/nodes=1", "There are not enough resources")):  # exotic, no -t exotic
        with pytest.raises(Grid5000CreateError, match=text):
            site.jobs.create({"command": "sleep 1", "resources": resources})
    with pytest.raises(Grid5000CreateError, match="is not in queue 'default'"):
        gk.sites["nancy"].jobs.create({"command": "sleep 1", "resources": "{cluster='grele'}/nodes=1"})
    ok = gk.sites["nancy"].jobs.create({"command": "sleep 1", "queue": "production",
                                        "resources": "{cluster='grele'}/nodes=1,walltime=2:00"})
    ok.delete()
    with pytest.raises(Grid5000CreateError, match="should be a String"):
        site.jobs.create({"command": "sleep 1", "reservation": 12})
    with pytest.raises(Grid5000CreateError, match="Syntax error in reservation start date"):
        site.jobs.create({"command": "sleep 1", "reservation": "tomorrow"})


# --- deployments and vlans -------------------------------------------------------------------

def test_deployment_and_vlans_read_by_the_client(gk, server, ref):
    site = gk.sites["nancy"]
    job = site.jobs.create({"name": "vl", "command": "sleep 1d", "types": ["deploy"],
                            "resources": "{type='kavlan'}/vlan=1+{cluster='gros'}/nodes=2,walltime=1:00"})
    wait_state(job, ("running",))
    vlan = job.resources_by_type["vlans"][0]
    dep = site.deployments.create({"nodes": job.assigned_nodes, "environment": "debian12-min",
                                   "key": "ssh-ed25519 AAAA test", "vlan": vlan})
    assert dep.status == "processing" and dep.uid.startswith("D-") and "/files/alice-key-" in dep.key
    while dep.status == "processing":
        time.sleep(0.05)
        dep.refresh()
    assert dep.status == "terminated"
    assert {n: r["state"] for n, r in dep.result.items()} == {n: "OK" for n in job.assigned_nodes}
    assert [d.uid for d in site.deployments.list(user="alice")][:1] == [dep.uid]
    # vlans: list, one, nodes in it (the primary interfaces the deployment moved)
    vl = site.vlans.list()
    assert [v.uid for v in vl][:2] == ["DEFAULT", "1"] and site.vlans[vlan].type == "kavlan"
    assert sorted(n.uid for n in site.vlans[vlan].nodes.list()) == sorted(job.assigned_nodes)
    # move the secondary interfaces (eth1: kavlan-capable, not mounted) into the vlan
    secondaries = [a["network_address"] for n in job.assigned_nodes for a in
                   kavlan_adapters(ref.nodes("nancy", "gros")[int(n.split(".")[0].split("-")[1]) - 1])
                   if not a["mounted"]]
    assert secondaries == [n.replace(".nancy", "-eth1.nancy") for n in job.assigned_nodes]
    answer = site.vlans[vlan].nodes.submit(secondaries + ["nosuch-eth1.nancy.grid5000.fr"])
    assert {a: r["status"] for a, r in answer.items()} == {
        **{a: "success" for a in secondaries}, "nosuch-eth1.nancy.grid5000.fr": "failure"}
    again = site.vlans[vlan].nodes.submit(secondaries[:1])
    assert again[secondaries[0]] == {"status": "unchanged", "message": "Node already in vlan"}
    assert site.vlans[vlan].nodes.get(secondaries[0]).vlan == vlan
    where = site.vlansnodes.submit(secondaries + ["gros-9-eth1.nancy.grid5000.fr"])
    assert {w.uid: w.vlan for w in where} == {**{a: vlan for a in secondaries}, "gros-9-eth1.nancy.grid5000.fr": "DEFAULT"}
    assert len(site.vlansnodes.list()) == sum(len(kavlan_adapters(n)) for c in ref.cluster_uids("nancy")
                                              for n in ref.nodes("nancy", c))
    # users
    assert [u.uid for u in site.vlansusers.list()] == ["alice"]
    assert site.vlansusers["alice"].vlans == [vlan]
    assert site.vlans[vlan].users["alice"].status == "authorized"
    assert site.vlans[vlan].users["bob"].status == "unauthorized"
    # bob cannot move alice's nodes; nobody moves nodes into a vlan they do not hold
    import grid5000
    from grid5000.exceptions import Grid5000GetError
    bob = grid5000.Grid5000(uri=server.url, username="bob", password="bob-pw")
    with pytest.raises(Grid5000GetError) as e:
        bob.sites["nancy"].vlans[vlan].nodes.submit(secondaries)
    assert e.value.response_code == 403
    # when the job ends, kavlan puts everything back in the default vlan
    job.delete()
    assert server.vlan_members("nancy", vlan) == []


def test_deployment_refused_outside_a_deploy_job(gk):
    from grid5000.exceptions import Grid5000CreateError
    with pytest.raises(Grid5000CreateError, match="Cannot launch deployment"):
        gk.sites["rennes"].deployments.create({"nodes": ["paradoxe-60.rennes.grid5000.fr"], "environment": "debian12-min"})
    with pytest.raises(Grid5000CreateError, match="not valid"):
        gk.sites["rennes"].deployments.create({"nodes": [], "environment": "debian12-min"})


def test_a_subset_of_clusters_and_unknown_names(ref):
    srv = FakeG5k(sites={"nancy": {"gros": 3}, "rennes": None}, reference=ref)
    assert [n for n in srv.sites["nancy"].nodes] == [f"gros-{i}.nancy.grid5000.fr" for i in (1, 2, 3)]
    assert len(srv.sites["rennes"].nodes) == 171
    with pytest.raises(KeyError, match="paravance"):
        FakeG5k(sites={"rennes": {"paravance": 1}}, reference=ref)
    with pytest.raises(KeyError, match="lille"):
        FakeG5k(sites=["lille"], reference=ref)
    assert fqdn(ref.nodes("lyon", "hercule")[0], "lyon") == "hercule-1.lyon.grid5000.fr"
