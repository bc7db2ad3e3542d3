"""The reservation-file layer: read ``reservation.yaml`` with line positions
(:mod:`.yamlpos`), check it against schemas (:mod:`.schemacheck`) and build a validated
:class:`~enos.reservation.config.Config` (:mod:`.config`).

This layer never imports providers: the caller (the task runner, the CLI) hands it a
``provider_loader`` that maps a provider type to its class.
"""
