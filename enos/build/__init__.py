"""Image builders behind ``enos build <provider>`` (e.g. :mod:`enos.build.libvirt_image`)."""
