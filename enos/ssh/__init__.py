"""The SSH layer: per-env ``ssh_config``/``known_hosts`` and the wait for hosts to answer
(:mod:`.client`), the env's key pair (:mod:`.keys`), OpenSSH's connection-multiplexing
protocol (:mod:`.mux`) and the parallel command fan-out over the env's masters
(:mod:`.remote`)."""
