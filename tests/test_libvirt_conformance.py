"""The in-process conformance suite against libvirt's ``test:///default`` driver.

``test:///default`` keeps its state per process, so the CLI suite (new processes) cannot
see it; the in-process suite builds a new provider object from the journal re-read from
disk instead (see enos.testing.conformance.ProviderConformance)."""
import pytest

from prereq import need_module  # noqa: E402

need_module("libvirt", module_level=True)

from enos.testing.conformance import ProviderConformance  # noqa: E402
from test_libvirt import hypervisor, image, make_config, make_provider as _make, ours  # noqa: E402,F401


class TestLibvirtTestDriverConformance(ProviderConformance):
    min_checkpoints = 5

    @pytest.fixture
    def make_provider(self, hypervisor, image, tmp_path):  # noqa: F811
        self.conn = hypervisor
        # the test driver invents a lease per started domain, 192.168.122.23 upwards by 20
        # whatever the network (past .122.243 it goes on in .123, .124 ...): a /16 holds them
        config = make_config(image, {"tiny": {"control": 1, "compute": 2}},
                             network={"cidr": "192.168.0.0/16"})

        def factory(journal, run_id):
            return _make(config, tmp_path, journal=journal, run_id=run_id)
        return factory

    def leftovers(self, run_id):
        return ours(self.conn, run_id)
