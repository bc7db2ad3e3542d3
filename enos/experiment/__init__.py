"""The experiment layer: what researchers book machines for. An :class:`Env` (from
``enos.up``/``enos.load``) runs commands and playbooks on its hosts, shapes the network
between roles (``tc``), gathers facts and brings result files home (``backup``). The CLI's
``up``, ``run``, ``destroy``, ``info``, ``tc`` and ``backup`` are thin wrappers over it."""
