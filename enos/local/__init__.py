"""Helpers of the ``local`` provider (``enos/provider/local.py``): network namespaces,
veths and per-host sshd processes (:mod:`.netns`)."""
